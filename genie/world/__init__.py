"""A world and the one way to play it. `folder`: the world folder users share, train into and
play (world.json, the parts, fingerprints, keys, sampling defaults, `World.load`); `engine`:
the batched `WorldEngine` (reset from prompt frames, step with one action per row, rollout)
that evaluation, clip generation, the play test and the playground all play through.
Uses `genie.models` and `genie.utils`; used by `genie.eval`, `genie.serve` and `genie.generate`.

The folder's names are re-exported here (`from genie.world import World, load_part`)."""

from genie.world.folder import (  # noqa: F401
    CHORDS,
    FORMAT,
    TOKENS_KEY,
    WORLD_JSON,
    Sampling,
    World,
    check_compatible,
    default_keys,
    export_part,
    fingerprint,
    load_part,
    part_fingerprints,
    read_meta,
    set_action_labels,
    write_meta,
)
