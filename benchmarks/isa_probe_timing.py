"""The timing side of benchmarks/isa_probe.py, one process per CPUID mask.

`python isa_probe_timing.py CONFIG NAME` times one .tflite graph named in the JSON config
through kws.inference.Predictor (one thread, batch 1), or with NAME front_end the log-mel
front end of one clip, and prints one line `ISA_PROBE_RESULT {json}` that includes the
instruction sets the CPUID instruction reports to this process (under the cpuid_mask shim:
the masked ones), read by executing CPUID itself. One graph per process: with several
TFLite interpreters in one process, the float32 graph's time varied 2.8-6.7 ms with the
order they were loaded in.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (leaf, subleaf, register 0-3 = eax ebx ecx edx, bit) of the instruction sets that decide
# which XNNPACK kernels run
CPUID_FLAGS = {
    "fma": (1, 0, 2, 12),
    "avx2": (7, 0, 1, 5),
    "avx512f": (7, 0, 1, 16),
    "avx512bw": (7, 0, 1, 30),
    "avx512_vnni": (7, 0, 2, 11),
    "avx_vnni": (7, 1, 0, 4),
    "amx_int8": (7, 0, 3, 25),
}
# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]), System V x86-64 calling convention
CPUID_CODE = bytes.fromhex("53 89f8 89f1 4989d0 0fa2 418900 41895804 41894808 4189500c 5b c3")


def cpuid_flags() -> dict[str, bool]:
    """The instruction sets CPUID reports to this process (executes the instruction)."""
    code = mmap.mmap(-1, len(CPUID_CODE), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(CPUID_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(code))
    signature = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)
    cpuid = signature(address)
    registers = (ctypes.c_uint32 * 4)()
    flags = {}
    for name, (leaf, subleaf, register, bit) in CPUID_FLAGS.items():
        cpuid(leaf, subleaf, ctypes.addressof(registers))
        flags[name] = bool(registers[register] >> bit & 1)
    del cpuid, registers
    return flags


def main() -> None:
    """Time the graph (or the front end) named on the command line; print the result line."""
    import numpy as np
    from _common import interleaved_ms

    from kws.features import log_mel
    from kws.inference import Predictor
    from kws.params import FeatureParams

    config = json.loads(Path(sys.argv[1]).read_text())
    name = sys.argv[2]
    fp = FeatureParams(**config["features"])
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, fp.n_frames, fp.n_mels)).astype(np.float32)
    clip = (0.1 * rng.standard_normal(fp.clip_samples)).astype(np.float32)
    call: Callable[[], object]
    if name == "front_end":
        call = partial(log_mel, clip, fp)
    else:
        graph = Path(config["graphs"][name]).read_bytes()
        call = partial(
            Predictor(graph, config["labels"], fp, num_threads=1).probabilities, features
        )
    rounds, per_round = config["rounds"], config["invokes_per_round"]
    latency = interleaved_ms({name: call}, rounds, per_round, config["warmup"])[name]
    print("ISA_PROBE_RESULT " + json.dumps({"cpuid": cpuid_flags(), "latency_ms": latency}))


if __name__ == "__main__":
    main()
