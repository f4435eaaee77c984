"""What happens on SIGINT, SIGTERM and SIGHUP.

Ctrl-C (SIGINT), `kill` / SLURM / a container stop (SIGTERM) and a closed
terminal (SIGHUP) all ask the run to stop: the handler only sets a flag, the
loop finishes the step in progress, writes a final checkpoint and result.json,
and the run ends with stop_reason "interrupted" (exit 128 + signal number in
the CLI: 130, 143, 129). The caller's handler of that signal comes back at
once, so a second signal acts as it would have without tinynet (a second
Ctrl-C raises KeyboardInterrupt at once; a second SIGTERM ends the process).
A signal the caller ignores (SIG_IGN, e.g. SIGINT under `nohup` or `&`) stays
ignored. Handlers are installed only in the main thread (signal's rule).
"""
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    def __init__(self, signals=STOP_SIGNALS):
        self.signals = signals
        self.received = None         # the first stop signal's number
        self.previous = {}

    @property
    def flag(self):
        return self.received is not None

    @property
    def name(self):
        return signal.Signals(self.received).name if self.received else None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                old = signal.getsignal(s)
                if old is signal.SIG_IGN:
                    continue
                self.previous[s] = old
                signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        signal.signal(signum, self.previous[signum])

    def __exit__(self, *exc):
        for s, old in self.previous.items():
            signal.signal(s, old)
        self.previous = {}
        return False
