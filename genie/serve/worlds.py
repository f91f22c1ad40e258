"""The worlds one playground serves, by name: `genie play --world A --world B` or
`genie play --world worlds/` (a folder of world folders).

    worlds = WorldSet.load(["worlds/coinrun", "worlds/boxing"])   # each loaded once
    worlds.names, worlds.default        # ["coinrun", "boxing"], "coinrun"
    worlds["boxing"]                    # the World; an unknown name is a one-line UserError

A world is known by its folder name. Every player's engine shares its world's loaded models
(genie/serve/sessions.py); the batcher steps only players of the same world together
(`genie.serve.batcher.batch_key`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genie.utils.errors import UserError
from genie.world.folder import WORLD_JSON, World


def world_name(path: str | Path) -> str:
    """The name a world folder is known by: its folder name."""
    p = Path(path)
    return p.name or p.resolve().name


def resolve_worlds(paths: list, default: str | None = None) -> tuple[list[tuple[str, Path]], str]:
    """`--world` values -> ([(name, world folder)], the default world's name), without loading
    anything. A value is a world folder (it has world.json) or a folder of world folders (its
    subfolders with a world.json, by name). The default is `default` if given, else the first
    world given (for a folder of worlds, its first by name). Duplicate names, a missing folder
    or an unknown `default` are one-line UserErrors."""
    found: list[tuple[str, Path]] = []
    for value in paths:
        p = Path(value)
        if not p.is_dir():
            raise UserError(f"world folder {p} does not exist")  # as World.from_folder says it
        if (p / WORLD_JSON).is_file():
            found.append((world_name(p), p))
            continue
        inside = sorted(d for d in p.iterdir() if d.is_dir() and (d / WORLD_JSON).is_file())
        if not inside:
            raise UserError(
                f"{p} is not a world folder ({WORLD_JSON} missing) nor a folder of worlds "
                f"(no subfolder has a {WORLD_JSON})"
            )
        found += [(d.name, d) for d in inside]
    seen: dict[str, Path] = {}
    for name, p in found:
        if name in seen and seen[name].resolve() == p.resolve():
            raise UserError(f"world {p} is given twice: give each world once")
        if name in seen:
            raise UserError(
                f"two worlds are named '{name}' ({seen[name]} and {p}): a world is known by its "
                "folder name, so rename one folder"
            )
        seen[name] = p
    if default is not None and default not in seen:
        raise UserError(f"--default-world {default}: no such world (serving: {', '.join(seen)})")
    return found, default if default is not None else found[0][0]


class WorldSet:
    """Loaded worlds by name, in the order given, and the one new players start in."""

    def __init__(self, worlds: dict[str, World], default: str | None = None):
        if not worlds:
            raise ValueError("a WorldSet needs at least one world")
        self.worlds = dict(worlds)
        self.default = default if default is not None else next(iter(self.worlds))
        if self.default not in self.worlds:
            raise UserError(f"no world named '{self.default}' (serving: {', '.join(self.names)})")

    @classmethod
    def load(cls, paths: list, default: str | None = None) -> WorldSet:
        """Resolve `--world` values (`resolve_worlds`) and load each world once; a bad world
        fails in one line (World.from_folder's errors)."""
        found, default = resolve_worlds(paths, default)
        return cls({name: World.from_folder(p) for name, p in found}, default)

    @classmethod
    def of(cls, worlds) -> WorldSet:
        """A WorldSet from a WorldSet, a loaded World, a world folder, or a list of folders."""
        if isinstance(worlds, WorldSet):
            return worlds
        if isinstance(worlds, World):
            return cls({world_name(worlds.root): worlds})
        if isinstance(worlds, (list, tuple)):
            return cls.load(list(worlds))
        return cls.load([worlds])

    @property
    def names(self) -> list[str]:
        return list(self.worlds)

    def add(self, name: str, world: World) -> None:
        """A world trained while serving (the Train tab): every tab's picker offers it next."""
        self.worlds[name] = world

    @property
    def default_world(self) -> World:
        return self.worlds[self.default]

    def __len__(self) -> int:
        return len(self.worlds)

    def __getitem__(self, name: str) -> World:
        world = self.worlds.get(name)
        if world is None:
            raise UserError(f"unknown world '{name}': use one of {', '.join(self.names)}")
        return world

    def name_of(self, name: str | None) -> str:
        """`name` if it is served (a UserError listing the names if not); None: the default."""
        if name is None:
            return self.default
        self[name]
        return name

    def default_start(self, name: str | None = None):
        """Where a player of world `name` (default: the default world) starts: its first
        example frame, or mid grey when it has none."""
        world = self[self.name_of(name)]
        if world.examples:
            return world.examples[0]
        s = world.frame_size[0]
        return np.full((s, s, 3), 128, np.uint8)
