"""Machines still graded by a type or default model set: the "enrol this machine" list of the report.

A machine's own set (`<site>/<type>/<id>`, trained on its own normal recordings with `signalcraft
train`) knows its sound; a type or default set only knows machines like it. The list says, per
machine, which scope graded its latest recording and how many NORMAL recordings it has so far,
which is what training its own set would start from (at least 5, better 20 or more).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Fewer normal recordings than this cannot calibrate a machine's own set (out-of-fold training).
MIN_ENROLMENT_RECORDINGS = 5


@dataclass(frozen=True)
class EnrolmentCandidate:
    site: str | None
    machine_type: str | None
    machine_id: str | None
    scope: str                # what graded its latest recording: type or default
    model_name: str | None
    normal_recordings: int    # NORMAL grades so far: the clips its own set would train on

    @property
    def ready(self) -> bool:
        return self.normal_recordings >= MIN_ENROLMENT_RECORDINGS

    def train_command(self, bucket: str | None) -> str:
        path = "/".join(p for p in (self.site, self.machine_type, self.machine_id) if p)
        source = f"s3://{bucket}/{path}/" if bucket else f"<recordings>/{path}/"
        return f"signalcraft train {source} --out s3://<models>/{path}/ -m {self.machine_type}"


def enrolment_candidates(table: pa.Table) -> list[EnrolmentCandidate]:
    """Machines (site, type, id known) whose latest graded record came from a type or default set."""
    latest: dict[tuple, dict] = {}
    normals: dict[tuple, int] = {}
    for row in table.select(["site", "machine_type", "machine_id", "model_scope", "model_name", "status", "grade",
                             "scored_at", "bucket"]).to_pylist():
        machine = (row["site"], row["machine_type"], row["machine_id"])
        if row["machine_id"] is None or row["status"] != "ok":
            continue
        normals[machine] = normals.get(machine, 0) + (row["grade"] == "NORMAL")
        if machine not in latest or row["scored_at"] >= latest[machine]["scored_at"]:
            latest[machine] = row
    return sorted(
        (EnrolmentCandidate(*machine, scope=row["model_scope"] or "default", model_name=row["model_name"],
                            normal_recordings=normals[machine])
         for machine, row in latest.items() if row["model_scope"] in (None, "type", "default")),
        key=lambda c: (-c.normal_recordings, str(c.site), str(c.machine_type), str(c.machine_id)),
    )


def format_enrolment(candidates: list[EnrolmentCandidate], bucket: str | None = None) -> str:
    """The report's section: one line per machine, the ready ones with the command that enrols them."""
    if not candidates:
        return "Every machine is graded by its own model set."
    lines = [f"Enrol these machines ({len(candidates)} graded by a type or default set):",
             f"  {'site':<10} {'type':<12} {'machine':<10} {'graded by':<20} {'normal recordings':>17}"]
    for c in candidates:
        lines.append(f"  {c.site or '-':<10} {c.machine_type or '-':<12} {c.machine_id or '-':<10} "
                     f"{(c.scope + ': ' + (c.model_name or '?'))[:20]:<20} {c.normal_recordings:>17}")
        if c.ready:
            lines.append(f"      {c.train_command(bucket)}")
    return "\n".join(lines)
