// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Off-CPU: on sched_switch the outgoing thread's stacks and time are kept per thread; when the
 * thread is switched back in after at least min_blocked_ns, one event goes to userspace. The
 * filter runs here so userspace sees only blocks worth reporting, not every context switch.
 * A raw tracepoint, so it needs neither tracefs nor fentry.
 */
#include "common.bpf.h"

/* Layout parsed by crates/ebpf/src/off_cpu.rs (OFF_CPU_EVENT_SIZE). */
struct off_cpu_event {
	__u64 ktime_ns;   /* switch-in time */
	__u64 blocked_ns;
	__u64 user_ip;
	__u32 pid;
	__u32 tid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 stack_generation;
	__u32 cpu;
	__u32 flags;
	__u32 state;      /* prev_state when switched out: 0 preempted, 1 sleeping, 2 uninterruptible… */
	char comm[TASK_COMM_LEN];
};
_Static_assert(sizeof(struct off_cpu_event) == 72, "off_cpu_event layout changed: update off_cpu.rs");

/* Layout read by crates/ebpf/src/off_cpu.rs (SWITCHED_OUT_SIZE). */
struct switched_out {
	__u64 ktime_ns;
	__u64 user_ip;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 stack_generation;
	__u32 state;
};
_Static_assert(sizeof(struct switched_out) == 32, "switched_out layout changed: update off_cpu.rs");

const volatile __u64 min_blocked_ns = 1000000;
const volatile bool include_preempted = true;
const volatile bool only_targets = false;
/* A process never followed: the reader itself, whose own blocks would feed back into its work. */
const volatile __u32 skip_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

/* Threads currently off CPU, by tid. LRU so threads that exit while switched out age away. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct switched_out);
} off_cpu_since SEC(".maps");

/* Processes (tgid) to follow when only_targets is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

SEC("raw_tp/sched_switch")
int on_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
	 *          unsigned int prev_state) */
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	__u32 prev_state = (__u32)ctx->args[3];
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tgid = BPF_CORE_READ(prev, tgid);
	__u32 next_tid, next_tgid;
	struct switched_out *since;
	struct off_cpu_event *event;
	__u64 blocked;

	if (prev_tgid != 0 && prev_tgid != skip_tgid && !(BPF_CORE_READ(prev, flags) & PF_KTHREAD) &&
	    (include_preempted || prev_state != 0) &&
	    (!only_targets || bpf_map_lookup_elem(&targets, &prev_tgid))) {
		/* Still running as prev here, so the stacks taken now are prev's. */
		__u32 prev_tid = BPF_CORE_READ(prev, pid);
		__u32 generation = stack_generation;
		struct switched_out out = {
			.ktime_ns = now,
			.stack_generation = generation,
			.state = prev_state,
		};

		out.kernel_stack_id = stack_id(ctx, generation, 0, 0);
		out.user_stack_id = stack_id(ctx, generation, BPF_F_USER_STACK, 1);
		out.user_ip = saved_user_ip();
		if (bpf_map_update_elem(&off_cpu_since, &prev_tid, &out, BPF_ANY))
			count(COUNTER_OFF_CPU_START_FULL);
	}

	next_tid = BPF_CORE_READ(next, pid);
	since = bpf_map_lookup_elem(&off_cpu_since, &next_tid);
	if (!since)
		return 0;
	blocked = now - since->ktime_ns;
	if (blocked < min_blocked_ns) {
		bpf_map_delete_elem(&off_cpu_since, &next_tid);
		count(COUNTER_OFF_CPU_SHORT);
		return 0;
	}
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		bpf_map_delete_elem(&off_cpu_since, &next_tid);
		count(COUNTER_RINGBUF_FULL);
		return 0;
	}
	next_tgid = BPF_CORE_READ(next, tgid);
	event->ktime_ns = now;
	event->blocked_ns = blocked;
	event->user_ip = since->user_ip;
	event->pid = next_tgid;
	event->tid = next_tid;
	event->user_stack_id = since->user_stack_id;
	event->kernel_stack_id = since->kernel_stack_id;
	event->stack_generation = since->stack_generation;
	event->cpu = bpf_get_smp_processor_id();
	event->flags = RECORD_IN_KERNEL;
	event->state = since->state;
	BPF_CORE_READ_STR_INTO(&event->comm, next, comm);
	bpf_ringbuf_submit(event, 0);
	/* Deleted only after the event is committed: userspace keeps the stacks that entries of
	 * this map refer to, so the stacks stay kept until the event can be read. */
	bpf_map_delete_elem(&off_cpu_since, &next_tid);
	count(COUNTER_RECORDS);
	return 0;
}
