/* cpuid_mask: LD_PRELOAD shim that hides instruction sets from a process's CPUID.
 *
 * Runtime dispatchers (XNNPACK and ruy through cpuinfo, OpenBLAS) pick their kernels from
 * the CPUID instruction, which user space cannot intercept, except with Linux's CPUID
 * faulting (arch_prctl ARCH_SET_CPUID, /proc/cpuinfo flag cpuid_fault): then every CPUID
 * raises SIGSEGV. The handler runs the real CPUID, clears the masked feature bits and
 * resumes after the instruction. The setting is per thread, inherited by threads created
 * later, and reset by execve. glibc's own start-up (its memcpy choice) already ran.
 *
 * CPUID_MASK selects what stays (unset: nothing is hidden):
 *   avx2       AVX2 + FMA, no AVX-512, no AVX-VNNI, no AMX (Haswell .. Comet Lake, Zen 1-3)
 *   avx2_vnni  the same plus AVX-VNNI (Alder Lake and later without AVX-512)
 * CPUID_MASK_REPORT=1 prints the number of emulated CPUID instructions at exit (stderr).
 *
 * Build: cc -O2 -shared -fPIC -o cpuid_mask.so cpuid_mask.c
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* leaf 7 subleaf 0 EBX: avx512 f dq ifma pf er cd bw vl */
#define L7_EBX_AVX512 ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | \
                       (1u << 28) | (1u << 30) | (1u << 31))
/* leaf 7 subleaf 0 ECX: avx512 vbmi vbmi2 vnni bitalg vpopcntdq */
#define L7_ECX_AVX512 ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
/* leaf 7 subleaf 0 EDX: avx512 4vnniw 4fmaps vp2intersect fp16, amx bf16 tile int8 */
#define L7_EDX_AVX512_AMX ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | \
                           (1u << 24) | (1u << 25))
/* leaf 7 subleaf 1 EAX: avx-vnni (bit 4), avx512_bf16 (5), amx-fp16 (21), avx-ifma (23) */
#define L7S1_EAX_AVX_VNNI (1u << 4)
#define L7S1_EAX_OTHERS ((1u << 5) | (1u << 21) | (1u << 23))
/* leaf 7 subleaf 1 EDX: avx-vnni-int8 (4), avx-ne-convert (5), avx-vnni-int16 (10) */
#define L7S1_EDX_AVX ((1u << 4) | (1u << 5) | (1u << 10))

static int keep_avx_vnni;
static volatile unsigned long emulated;

static void set_cpuid_faulting(int on) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void masked_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    set_cpuid_faulting(0);
    __asm__ volatile("cpuid"
                     : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(subleaf));
    set_cpuid_faulting(1);
    if (leaf == 7 && subleaf == 0) {
        r[1] &= ~L7_EBX_AVX512;
        r[2] &= ~L7_ECX_AVX512;
        r[3] &= ~L7_EDX_AVX512_AMX;
    } else if (leaf == 7 && subleaf == 1) {
        r[0] &= ~(L7S1_EAX_OTHERS | (keep_avx_vnni ? 0 : L7S1_EAX_AVX_VNNI));
        r[3] &= ~L7S1_EDX_AVX;
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AMX tile and AVX10 descriptions */
    }
}

static void on_sigsegv(int signal, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: die as without the shim */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(signal, &dfl, NULL);
        return;
    }
    uint32_t r[4];
    masked_cpuid((uint32_t)regs[REG_RAX], (uint32_t)regs[REG_RCX], r);
    regs[REG_RAX] = r[0];
    regs[REG_RBX] = r[1];
    regs[REG_RCX] = r[2];
    regs[REG_RDX] = r[3];
    regs[REG_RIP] += 2;
    emulated++;
    (void)info;
}

static void report(void) {
    fprintf(stderr, "cpuid_mask: %lu CPUID instructions emulated\n", emulated);
}

__attribute__((constructor)) static void install(void) {
    const char *mask = getenv("CPUID_MASK");
    if (mask == NULL || *mask == '\0') return;
    if (strcmp(mask, "avx2") != 0 && strcmp(mask, "avx2_vnni") != 0) {
        fprintf(stderr, "cpuid_mask: unknown CPUID_MASK %s (avx2 | avx2_vnni)\n", mask);
        _exit(2);
    }
    keep_avx_vnni = strcmp(mask, "avx2_vnni") == 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsegv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("cpuid_mask: arch_prctl(ARCH_SET_CPUID) (no CPUID faulting on this CPU?)");
        _exit(2);
    }
    const char *want_report = getenv("CPUID_MASK_REPORT");
    if (want_report != NULL && strcmp(want_report, "1") == 0) atexit(report);
}
