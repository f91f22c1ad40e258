"""The playground and its HTTP API. `app` builds the Gradio app (layout only), `handlers` its
events, `html` the frame markup, `sessions` per-player state, `batcher` the one model call that
serves every player of a world at once, `worlds` the worlds one server plays, `cli` the
`genie play` command; `bench` and `drills` measure it (`genie bench play`, load drills,
headless Chromium), `browser` holds what both need to drive Chromium. No model code: it plays
through `genie.world.engine` and `genie.generate`."""
