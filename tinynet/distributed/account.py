"""What a rank sends, by tag, per step (issue 19's account).

`add(tag, nbytes)` is called by every collective with the payload it
contributes; `end_step()` closes a training step. `summary()` gives per tag:
the steps it occurred on, the bytes on such a step (the amortized ones:
"factors" every stats_every steps, "inverses" every T), and the mean bytes per
step over the run.
"""


class CommAccount:
    def __init__(self):
        self.reset()

    def reset(self):
        self.steps = 0
        self.total = {}             # tag -> bytes
        self.calls = {}             # tag -> collectives
        self.steps_with = {}        # tag -> steps on which the tag occurred
        self._this_step = {}        # tag -> bytes in the step being run
        self.last_step = {}         # tag -> bytes of the last finished step

    def add(self, tag, nbytes):
        self.total[tag] = self.total.get(tag, 0) + int(nbytes)
        self.calls[tag] = self.calls.get(tag, 0) + 1
        self._this_step[tag] = self._this_step.get(tag, 0) + int(nbytes)

    def end_step(self):
        for tag in self._this_step:
            self.steps_with[tag] = self.steps_with.get(tag, 0) + 1
        self.last_step, self._this_step = self._this_step, {}
        self.steps += 1

    def last_step_bytes(self):
        return sum(self.last_step.values())

    def summary(self):
        """[(tag, steps_with, calls, bytes per such step, mean bytes per step)]."""
        rows = []
        for tag in sorted(self.total):
            k = self.steps_with.get(tag, 0)
            rows.append((tag, k, self.calls[tag], self.total[tag] / k if k else float(self.total[tag]),
                         self.total[tag] / self.steps if self.steps else float("nan")))
        return rows

    def table(self):
        lines = [f"{'what':<12}{'steps':>8}{'collectives':>13}{'bytes when sent':>17}{'bytes/step':>14}"]
        for tag, k, calls, per, mean in self.summary():
            lines.append(f"{tag:<12}{k:>8}{calls:>13}{per:>17,.0f}{mean:>14,.0f}")
        tot = sum(self.total.values())
        lines.append(f"{'all':<12}{self.steps:>8}{sum(self.calls.values()):>13}{'':>17}"
                     f"{(tot / self.steps if self.steps else 0):>14,.0f}")
        return "\n".join(lines)
