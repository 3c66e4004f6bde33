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
	/* Frames that follow the record when RECORD_UNWOUND is set, else 0. */
	__u32 user_frame_count;
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

/*
 * User-stack unwinding with tables built from .eh_frame (crates/ebpf/src/unwind_table.rs and
 * unwind.rs), for processes userspace has given tables: per process, its executable mappings; per
 * mapping, a sorted range of rows in one shared array. Each step finds the pc's mapping, binary-
 * searches its rows, computes the CFA and reads the return address (CFA - 8) and, when the row
 * says it was saved, the caller's rbp. Where no table covers a pc, the step follows rbp as a frame
 * pointer, as bpf_get_stackid would. Processes without tables keep the bpf_get_stackid path.
 */
#define RECORD_UNWOUND (1u << 3)        /* user frames follow the record */
#define RECORD_UNWIND_DEPTH (1u << 4)   /* the walk stopped at UNWIND_MAX_FRAMES */
#define RECORD_UNWIND_STOPPED (1u << 5) /* a rule the table cannot follow or unreadable memory */

#define UNWIND_MAX_FRAMES MAX_STACK_DEPTH
#define UNWIND_MAX_MAPPINGS 32
#define UNWIND_SEARCH_STEPS 24 /* a table holds at most 2^24 rows */

/* Kinds of struct unwind_row (RowKind in unwind_table.rs). */
#define ROW_NO_INFO 0
#define ROW_CFA_RSP 1
#define ROW_CFA_RBP 2
#define ROW_END 3
#define ROW_PLT 4
#define ROW_UNSUPPORTED 5

struct unwind_row {
	__u32 pc; /* ELF virtual address where the row starts */
	__s32 cfa_offset;
	__s16 rbp_offset; /* 0: rbp unchanged; else saved at CFA + rbp_offset */
	__u8 kind;
	__u8 pad;
};
_Static_assert(sizeof(struct unwind_row) == 12, "unwind_row layout changed: update unwind_table.rs");

struct unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 bias; /* runtime address - ELF virtual address */
	__u32 row_start;
	__u32 row_count;
};

struct unwind_process {
	__u32 count;
	__u32 pad;
	struct unwind_mapping mappings[UNWIND_MAX_MAPPINGS];
};
_Static_assert(sizeof(struct unwind_process) == 8 + 32 * UNWIND_MAX_MAPPINGS,
	       "unwind_process layout changed: update unwind.rs");

/* Rows of every loaded table. Sized by userspace before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct unwind_process);
} unwind_processes SEC(".maps");

struct unwound_sample {
	struct cpu_sample sample;
	__u64 frames[UNWIND_MAX_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwound_sample);
} unwind_scratch SEC(".maps");

#define UNWIND_RUNNING 0
#define UNWIND_WHOLE 1
#define UNWIND_STOPPED 2

struct user_unwind_state {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 pid;
	__u32 count;
	__u32 end;
};

static __always_inline long read_user_u64(__u64 address, __u64 *value)
{
	return bpf_probe_read_user(value, sizeof(*value), (const void *)address);
}

/* The row for pc in mapping m, or kind ROW_NO_INFO when the table has none. */
static __always_inline int find_row(const struct unwind_mapping *m, __u64 pc, struct unwind_row *out)
{
	__u64 table_pc = pc - m->bias;
	__u32 lo = m->row_start, hi = m->row_start + m->row_count;
	const struct unwind_row *row;

	out->kind = ROW_NO_INFO;
	if (m->row_count == 0 || table_pc > 0xffffffffull)
		return 0;
	for (int step = 0; step < UNWIND_SEARCH_STEPS; step++) {
		__u32 mid;

		if (hi - lo <= 1)
			break;
		mid = lo + (hi - lo) / 2;
		row = bpf_map_lookup_elem(&unwind_rows, &mid);
		if (!row)
			return 0;
		if (row->pc <= table_pc)
			lo = mid;
		else
			hi = mid;
	}
	row = bpf_map_lookup_elem(&unwind_rows, &lo);
	if (row && row->pc <= table_pc)
		*out = *row;
	return 0;
}

static long unwind_step(__u64 index, void *data)
{
	struct user_unwind_state *st = data;
	const struct unwind_mapping *m = NULL;
	struct unwound_sample *out;
	struct unwind_process *proc;
	struct unwind_row row = {};
	__u32 zero = 0, n = st->count;
	__u64 pc, cfa, ra, bp;

	out = bpf_map_lookup_elem(&unwind_scratch, &zero);
	proc = bpf_map_lookup_elem(&unwind_processes, &st->pid);
	if (!out || !proc || n >= UNWIND_MAX_FRAMES) {
		st->end = UNWIND_STOPPED;
		return 1;
	}
	out->frames[n] = st->ip;
	st->count = n + 1;
	/* Past the leaf, ip is a return address: the call it returns from is the byte before. */
	pc = n ? st->ip - 1 : st->ip;

	for (int i = 0; i < UNWIND_MAX_MAPPINGS; i++) {
		if (i >= proc->count)
			break;
		if (pc >= proc->mappings[i].start && pc < proc->mappings[i].end) {
			m = &proc->mappings[i];
			break;
		}
	}
	if (m)
		find_row(m, pc, &row);

	switch (row.kind) {
	case ROW_END:
		st->end = UNWIND_WHOLE;
		return 1;
	case ROW_CFA_RSP:
		cfa = st->sp + row.cfa_offset;
		break;
	case ROW_CFA_RBP:
		cfa = st->bp + row.cfa_offset;
		break;
	case ROW_PLT:
		cfa = st->sp + 8 + ((st->ip & 15) >= (__u64)row.cfa_offset ? 8 : 0);
		break;
	case ROW_NO_INFO:
		/* No table: follow rbp as a frame pointer. */
		if (st->bp == 0) {
			st->end = UNWIND_WHOLE;
			return 1;
		}
		cfa = st->bp + 16;
		row.rbp_offset = -16;
		break;
	default:
		st->end = UNWIND_STOPPED;
		return 1;
	}
	if (read_user_u64(cfa - 8, &ra)) {
		st->end = UNWIND_STOPPED;
		return 1;
	}
	if (row.rbp_offset) {
		if (read_user_u64(cfa + row.rbp_offset, &bp)) {
			st->end = UNWIND_STOPPED;
			return 1;
		}
		st->bp = bp;
	}
	st->sp = cfa;
	st->ip = ra;
	if (ra == 0) {
		st->end = UNWIND_WHOLE;
		return 1;
	}
	return 0;
}

/* The sample with its user stack unwound by the tables of the process, sent from the per-CPU
 * scratch record with as many frames as were found. */
static __always_inline int record_unwound(struct bpf_perf_event_data *ctx, __u32 tgid, __u32 tid,
					  __u32 flags, int in_user)
{
	__u32 zero = 0, generation = stack_generation;
	struct user_unwind_state st = { .pid = tgid };
	struct unwound_sample *out;
	__u64 size;
	long err;

	if (in_user) {
		st.ip = ctx->regs.ip;
		st.sp = ctx->regs.sp;
		st.bp = ctx->regs.bp;
	} else {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

		if (!regs)
			return -1;
		st.ip = BPF_CORE_READ(regs, ip);
		st.sp = BPF_CORE_READ(regs, sp);
		st.bp = BPF_CORE_READ(regs, bp);
	}
	out = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!out)
		return -1;
	bpf_loop(UNWIND_MAX_FRAMES, unwind_step, &st, 0);
	/* The callback looked the scratch record up itself; same CPU, same record. */
	out = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!out)
		return -1;

	flags |= RECORD_UNWOUND;
	if (st.end == UNWIND_STOPPED)
		flags |= RECORD_UNWIND_STOPPED;
	else if (st.end == UNWIND_RUNNING)
		flags |= RECORD_UNWIND_DEPTH;
	out->sample.ktime_ns = bpf_ktime_get_ns();
	out->sample.period_ns = ctx->sample_period;
	out->sample.user_ip = st.count ? out->frames[0] : 0;
	out->sample.pid = tgid;
	out->sample.tid = tid;
	out->sample.user_stack_id = STACK_ID_NONE;
	out->sample.kernel_stack_id = in_user ? STACK_ID_NONE : stack_id(ctx, generation, 0, 0);
	out->sample.stack_generation = generation;
	out->sample.cpu = bpf_get_smp_processor_id();
	out->sample.flags = flags;
	bpf_get_current_comm(out->sample.comm, sizeof(out->sample.comm));
	if (st.count > UNWIND_MAX_FRAMES)
		st.count = UNWIND_MAX_FRAMES;
	out->sample.user_frame_count = st.count;
	size = sizeof(struct cpu_sample) + (__u64)st.count * sizeof(__u64);
	err = bpf_ringbuf_output(&samples, out, size, 0);
	if (err) {
		count(COUNTER_RINGBUF_FULL);
		return 0;
	}
	count(COUNTER_RECORDS);
	return 0;
}

/* A process's tables describe the image it runs: forget them when it execs another one or exits,
 * so neither a new image nor a reused pid is ever unwound with the old tables (it falls back to
 * frame pointers until userspace hands it over again). */
SEC("raw_tp/sched_process_exec")
int unwind_forget_on_exec(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	__u32 tgid = BPF_CORE_READ(task, tgid);

	bpf_map_delete_elem(&unwind_processes, &tgid);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int unwind_forget_on_exit(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct task_struct *p, bool group_dead): the last thread of the process. */
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	__u32 tgid;

	if (!(bool)ctx->args[1])
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&unwind_processes, &tgid);
	return 0;
}

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
	if (!(flags & RECORD_KERNEL_THREAD) && bpf_map_lookup_elem(&unwind_processes, &tgid) &&
	    record_unwound(ctx, tgid, tid, flags, in_user) == 0)
		return 0;

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
	sample->user_frame_count = 0;
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
