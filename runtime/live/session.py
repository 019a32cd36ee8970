"""What a run of one source and a fleet's run share: the stop request and its signals, how a
source is opened, the JSON lines, the stderr log, and the summary each source keeps."""
from __future__ import annotations

import sys
import threading
from typing import Callable

from runtime.live.readers import ReaderOptions
from runtime.live.source import open_capture
from runtime.live.summary import STOPPED, StopSignals, Summary
from runtime.outputs.jsonl import JsonLines


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LiveSession:
    def __init__(self, scorer, options: ReaderOptions, open_source: Callable | None = None,
                 stop: threading.Event | None = None, log: Callable[[str], None] | None = None):
        self.scorer, self.options = scorer, options
        self.open_source = open_source or (
            lambda source: open_capture(source, options.open_timeout, options.read_timeout))
        self.stop = stop or threading.Event()
        self.abort = threading.Event()       # a second stop request: do not wait for the reader threads
        self.log = log or log_to_stderr
        self.jsonl = JsonLines(options.jsonl) if options.jsonl is not None else None

    def signals(self) -> StopSignals:
        """Ctrl-C and SIGTERM handling for this run (enter it in the main thread around run())."""
        return StopSignals(self.stop, self.abort)

    def emit(self, record: dict) -> None:
        if self.jsonl is not None:
            self.jsonl.write(record)

    def new_summary(self, source: str) -> Summary:
        backend = self.scorer.backend
        return Summary(source, engine=backend.describe(), precision=backend.precision, ended="stopped",
                       detail=STOPPED)
