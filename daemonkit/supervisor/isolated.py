"""Reading the config for a reload in a child interpreter, so the loop never waits on it.

A reload used to read and validate the file in a thread of the supervisor: off the loop, but
not off the GIL. Splitting 9,000 environments there held every respawn for seconds (the
loop thread waits for the GIL at each system call while the reader computes). The child does
all of it at a lower priority and sends back the checked :class:`SupervisorConfig`, pickled
(our own child, our own classes: nothing untrusted is unpickled); the supervisor only loads
the bytes. A :class:`ConfigError` comes back as its one line.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

from ..errors import ConfigError
from .config import SupervisorConfig, load

#: a child that takes longer is killed: every file it reads is bounded and non-blocking
READ_TIMEOUT_S = 120.0
_ERROR = b"E"
_CONFIG = b"C"


def load_isolated(path: str, strict: bool = False) -> SupervisorConfig:
    """:func:`.config.load` in a child interpreter; ConfigError as it would raise."""
    # our sys.path as an argument, not PYTHONPATH: the child's environment is exactly ours,
    # or %(ENV_PYTHONPATH)s would expand differently there
    bootstrap = (f"import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
                 f"from {__name__} import _main; sys.exit(_main(sys.argv[2], sys.argv[3]))")
    command = [sys.executable, "-c", bootstrap, json.dumps([p for p in sys.path if p]), path,
               "strict" if strict else "lenient"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=READ_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{path}: not read within {READ_TIMEOUT_S:g}s") from None
    kind, payload = done.stdout[:1], done.stdout[1:]
    if done.returncode == 0 and kind == _CONFIG:
        config = pickle.loads(payload)  # our own child's answer
        assert isinstance(config, SupervisorConfig)
        return config
    if kind == _ERROR:
        raise ConfigError(payload.decode("utf-8", "replace"))
    why = done.stderr.decode("utf-8", "replace").strip().splitlines()
    raise ConfigError(f"{path}: the reader failed: {why[-1] if why else done.returncode}")


def _main(path: str, mode: str) -> int:
    os.nice(10)  # the supervisor's loop comes first
    try:
        config = load(path, strict=mode == "strict")
    except ConfigError as exc:
        sys.stdout.buffer.write(_ERROR + str(exc).encode("utf-8", "replace"))
        return 0
    sys.stdout.buffer.write(_CONFIG + pickle.dumps(config, pickle.HIGHEST_PROTOCOL))
    return 0

