"""What every bench prints beside its figures: the CPU they were measured on."""
import platform


def cpu_model() -> str:
    """/proc/cpuinfo's model name (else what platform knows)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'
