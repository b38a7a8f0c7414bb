"""Peak resident memory of this process, as the children of the benchmarks report it (standard library only).

ru_maxrss of a child reaped with wait4 also counts the parent's pages the child shared between fork
and exec (the parent here holds the S3 server and its objects), so each child reads its own
high-water mark, VmHWM, which starts fresh at exec.
"""

from __future__ import annotations


def peak_rss_mib() -> float:
    """VmHWM of this process in MiB (ru_maxrss where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
