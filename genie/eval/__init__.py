"""How good a world is, measured on the frames a player sees. `protocol`: Genie's clip
protocol (`genie eval`: rollout PSNR/SSIM per horizon, ΔtPSNR, LAM codes vs true actions,
reconstruction of the world's tokenizer or autoencoder); `playtest`: held keys from one start
frame against the real game re-played from its level seed (`replay`); `report`: reports,
strips and GIFs of both; `cli`: the `genie eval` and `genie playtest` commands. Plays through
`genie.world.engine`; reads recordings through `genie.data`."""
