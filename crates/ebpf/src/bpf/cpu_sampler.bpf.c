// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * CPU sampler: two perf_event programs on software cpu-clock events, one set of events per CPU at
 * the base rate and one at the boosted rate. The base program skips boosted processes and the
 * boosted program records only them, so a boosted process is sampled at the higher rate alone.
 */
#include "common.bpf.h"

/* Layout parsed by crates/ebpf/src/cpu_sampler.rs (CPU_SAMPLE_SIZE). */
struct cpu_sample {
	__u64 ktime_ns;
	__u64 period_ns;
	__u64 user_ip;
	__u32 pid;
	__u32 tid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 stack_generation;
	__u32 cpu;
	__u32 flags;
	char comm[TASK_COMM_LEN];
	__u32 pad;
};
_Static_assert(sizeof(struct cpu_sample) == 72, "cpu_sample layout changed: update cpu_sampler.rs");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} samples SEC(".maps");

/* Processes (tgid) sampled at the boosted rate. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} boosted SEC(".maps");

static __always_inline int record(struct bpf_perf_event_data *ctx, __u32 tgid, __u32 tid, __u32 flags)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 generation = stack_generation;
	/* The sampled registers are the user ones when the timer interrupted user code. */
	__u64 sampled_ip = ctx->regs.ip;
	int in_user = is_user_address(sampled_ip);
	struct cpu_sample *sample;

	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		flags |= RECORD_KERNEL_THREAD;
	if (!in_user)
		flags |= RECORD_IN_KERNEL;

	sample = bpf_ringbuf_reserve(&samples, sizeof(*sample), 0);
	if (!sample) {
		count(COUNTER_RINGBUF_FULL);
		return 0;
	}
	sample->ktime_ns = bpf_ktime_get_ns();
	sample->period_ns = ctx->sample_period;
	sample->pid = tgid;
	sample->tid = tid;
	sample->stack_generation = generation;
	sample->cpu = bpf_get_smp_processor_id();
	sample->pad = 0;
	bpf_get_current_comm(sample->comm, sizeof(sample->comm));

	if (in_user)
		sample->kernel_stack_id = STACK_ID_NONE;
	else
		sample->kernel_stack_id = stack_id(ctx, generation, 0, 0);

	if (flags & RECORD_KERNEL_THREAD) {
		sample->user_stack_id = STACK_ID_NONE;
		sample->user_ip = 0;
	} else {
		sample->user_stack_id = stack_id(ctx, generation, BPF_F_USER_STACK, 1);
		sample->user_ip = in_user ? sampled_ip : saved_user_ip();
	}
	sample->flags = flags;
	bpf_ringbuf_submit(sample, 0);
	count(COUNTER_RECORDS);
	return 0;
}

SEC("perf_event")
int sample_base_rate(struct bpf_perf_event_data *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	/* pid 0 is the idle task: time nobody used. */
	if (tgid == 0)
		return 0;
	if (bpf_map_lookup_elem(&boosted, &tgid)) {
		count(COUNTER_BOOSTED_SKIPPED);
		return 0;
	}
	return record(ctx, tgid, (__u32)pid_tgid, 0);
}

SEC("perf_event")
int sample_boosted_rate(struct bpf_perf_event_data *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	if (tgid == 0 || !bpf_map_lookup_elem(&boosted, &tgid))
		return 0;
	return record(ctx, tgid, (__u32)pid_tgid, RECORD_BOOSTED);
}
