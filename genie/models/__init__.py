"""The learned parts of a world, one file each: the VQ video tokenizer (`tokenizer`), the
continuous frame autoencoder (`autoencoder`), the latent action model (`lam`), the MaskGIT
dynamics (`dynamics`) and the diffusion dynamics (`diffusion`), built from the shared
space-time transformer (`blocks`), the vector quantizer (`quantizer`) and conv layers
(`layers`). `registry` names every part kind once; `pretrained` saves and loads a part as
config.json + model.safetensors.
Models import only `genie.utils`; nothing here knows about world folders, serving or data."""
