/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * Pieces shared by every oxeye BPF program: the double-buffered stack maps, the per-CPU
 * counters and the record layouts that userspace parses (the Rust modules of the same name mirror them;
 * keep both sides in step and bump the size asserts).
 */
#ifndef OXEYE_COMMON_BPF_H
#define OXEYE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define MAX_STACK_DEPTH 127
#define TASK_COMM_LEN 16
#define PF_KTHREAD 0x00200000

#define EFAULT 14
#define EEXIST 17
#define ENOMEM 12
#define ENOENT 2

/* Stack id written when no stack of that kind exists (kernel thread: no user stack; sample taken
 * in user mode: no kernel stack). Negative like the errors bpf_get_stackid returns. */
#define STACK_ID_NONE (-ENOENT)

/* Flags of a record. */
#define RECORD_IN_KERNEL (1u << 0)     /* the sample interrupted kernel code */
#define RECORD_KERNEL_THREAD (1u << 1) /* a kernel thread: no user space at all */
#define RECORD_BOOSTED (1u << 2)       /* taken by the boosted-rate perf events */

/* Per-CPU counters, one index each. Userspace sums them across CPUs. */
enum counter {
	COUNTER_RECORDS = 0,          /* records written to the ring buffer */
	COUNTER_RINGBUF_FULL,         /* records dropped: ring buffer full */
	COUNTER_USER_STACK_MAP_FULL,  /* bpf_get_stackid -ENOMEM: stack map full */
	COUNTER_USER_STACK_COLLISION, /* -EEXIST: a different stack owns the hash bucket */
	COUNTER_USER_STACK_FAULT,     /* -EFAULT: no user stack could be read */
	COUNTER_KERNEL_STACK_MAP_FULL,
	COUNTER_KERNEL_STACK_COLLISION,
	COUNTER_KERNEL_STACK_FAULT,
	COUNTER_STACK_OTHER_ERROR,    /* any other bpf_get_stackid error */
	COUNTER_BOOSTED_SKIPPED,      /* base-rate samples skipped because the pid is boosted */
	COUNTER_OFF_CPU_SHORT,        /* switch-ins below the minimum blocked time */
	COUNTER_OFF_CPU_START_FULL,   /* switch-outs not recorded: start map update failed */
	COUNTER_SYSCALL_COUNTS_FULL,  /* syscalls not counted: per-process count map update failed */
	COUNTER_OPEN_RELATIVE,        /* opens by a relative path, not matched against the watch list */
	COUNTER_PATH_TRUNCATED,       /* event paths or argv cut at their buffer size */
	COUNTER_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);

	/* Per-CPU slot and BPF programs do not nest on one CPU for the same program type, so a
	 * plain increment is enough. */
	if (value)
		*value += 1;
}

#ifndef OXEYE_NO_STACK_MAPS
/*
 * Two stack maps used in turn. The active one is chosen by the low bit of stack_generation, which
 * userspace bumps after it has read everything that referred to the map it is about to reuse, then
 * clears that map. A map full of stale stacks would otherwise make bpf_get_stackid fail with
 * -ENOMEM forever; clearing the active map would race with the programs filling it.
 * Sized by userspace before load (max_entries).
 */
#define STACK_MAP(name)                                                                      \
	struct {                                                                             \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                                      \
		__uint(max_entries, 4096);                                                   \
		__type(key, __u32);                                                          \
		__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));                         \
	} name SEC(".maps")

STACK_MAP(stacks_0);
STACK_MAP(stacks_1);

/* Written by userspace through the mmapped .bss. */
volatile __u32 stack_generation;

static __always_inline long stack_id(void *ctx, __u32 generation, __u64 flags, int user)
{
	long id;

	if (generation & 1)
		id = bpf_get_stackid(ctx, &stacks_1, flags);
	else
		id = bpf_get_stackid(ctx, &stacks_0, flags);
	if (id >= 0)
		return id;
	if (id == -ENOMEM)
		count(user ? COUNTER_USER_STACK_MAP_FULL : COUNTER_KERNEL_STACK_MAP_FULL);
	else if (id == -EEXIST)
		count(user ? COUNTER_USER_STACK_COLLISION : COUNTER_KERNEL_STACK_COLLISION);
	else if (id == -EFAULT)
		count(user ? COUNTER_USER_STACK_FAULT : COUNTER_KERNEL_STACK_FAULT);
	else
		count(COUNTER_STACK_OTHER_ERROR);
	return id;
}
#endif /* OXEYE_NO_STACK_MAPS */

/* The user-mode instruction pointer of the current task, from the registers saved at kernel
 * entry. Used when the sample interrupted kernel code (or for off-CPU, always): it is the leaf
 * frame, right even when the binary has no frame pointers and the walked stack is garbage past it. */
static __always_inline __u64 saved_user_ip(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	if (!regs)
		return 0;
	return BPF_CORE_READ(regs, ip);
}

/* Kernel addresses live in the upper half on x86_64 and arm64. */
static __always_inline int is_user_address(__u64 address)
{
	return (__s64)address >= 0;
}

char LICENSE[] SEC("license") = "GPL";

#endif
