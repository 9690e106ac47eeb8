"""Progress of a streamed run on stderr: one bar over the model calls (prefill, then one per generated
token) and one over the layers of the current call, with the bytes read so far. Bars are drawn only
when stderr is a terminal (tests and logs stay clean); the summary line is printed by the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm

from dsv3_weights.progress import gib


class RunProgress:
    def __init__(self, steps: int, layers: int, bytes_read: Callable[[], int], *, enabled: bool) -> None:
        disable = not (enabled and sys.stderr.isatty())
        self._bytes_read = bytes_read
        self._steps = tqdm(total=steps, desc="steps", unit="step", file=sys.stderr, disable=disable, position=0)
        self._layers = tqdm(
            total=layers, desc="layers", unit="layer", file=sys.stderr, disable=disable, position=1, leave=False
        )

    def layer(self, index: int) -> None:
        """Layer `index` of the current call starts."""
        if index == 0:
            self._layers.reset()
        self._layers.update(1)
        self._layers.set_postfix_str(f"read {gib(self._bytes_read())}", refresh=False)

    def step_done(self) -> None:
        self._steps.update(1)
        self._steps.set_postfix_str(f"read {gib(self._bytes_read())}", refresh=False)

    def close(self) -> None:
        self._layers.close()
        self._steps.close()


class NoProgress(RunProgress):
    def __init__(self) -> None:
        super().__init__(0, 0, lambda: 0, enabled=False)
