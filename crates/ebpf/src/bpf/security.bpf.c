// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Security events: process exec and exit (sched_process_exec / sched_process_exit), and from the
 * sys_exit raw tracepoint inet connects and accepts, opens of watched paths, privilege changes,
 * ptrace and module loads, plus per-process syscall counts by class. Raw tracepoints only: no
 * tracefs, no kprobes, no fentry.
 *
 * Filtering happens here so that a syscall storm costs userspace nothing: a syscall is counted in
 * a per-CPU map and, unless it is one of the few numbers below (and then passes its own filter:
 * inet family, watched path prefix, ptrace request that changes the tracee), sends nothing.
 */
#define OXEYE_NO_STACK_MAPS
#include "common.bpf.h"
#include <bpf/bpf_endian.h>

#if !defined(__TARGET_ARCH_x86)
#error "the syscall numbers below are x86_64's"
#endif

#define NR_OPEN 2
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_CREAT 85
#define NR_PTRACE 101
#define NR_SETUID 105
#define NR_SETGID 106
#define NR_SETREUID 113
#define NR_SETREGID 114
#define NR_SETGROUPS 116
#define NR_SETRESUID 117
#define NR_SETRESGID 119
#define NR_SETFSUID 122
#define NR_SETFSGID 123
#define NR_CAPSET 126
#define NR_INIT_MODULE 175
#define NR_OPENAT 257
#define NR_ACCEPT4 288
#define NR_FINIT_MODULE 313
#define NR_OPENAT2 437

/* A syscall's arguments in its saved registers (x86_64: di, si, dx, r10), from a typed pt_regs. */
#define ARG1(regs) ((regs)->di)
#define ARG2(regs) ((regs)->si)
#define ARG3(regs) ((regs)->dx)
#define ARG4(regs) ((regs)->r10)

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115

#define PATH_BYTES 256
#define ARGV_BYTES 1024
#define CWD_BYTES 256
#define CWD_DEPTH 24
/* Levels of parent directories checked against the watched inodes. */
#define INODE_DEPTH 16
#define SYSCALL_TABLE 512
#define SYSCALL_CLASSES 16

/* Kinds of event, in struct event_header.kind. Mirrored by security.rs. */
enum event_kind {
	EVENT_EXEC = 1,
	EVENT_EXIT = 2,
	EVENT_CONNECT = 3,
	EVENT_ACCEPT = 4,
	EVENT_FILE_OPEN = 5,
	EVENT_PRIVILEGE = 6,
	EVENT_PTRACE = 7,
	EVENT_MODULE = 8,
};

#define FLAG_ARGV_TRUNCATED (1u << 0)
#define FLAG_CWD_TRUNCATED (1u << 1)
#define FLAG_PATH_TRUNCATED (1u << 2)
/* file_open_event.path was resolved from the opened file (leaf first, NUL-separated components). */
#define FLAG_PATH_RESOLVED (1u << 3)

/* Layouts parsed by crates/ebpf/src/security.rs (the *_SIZE constants there). */
struct event_header {
	__u64 ktime_ns;
	__u64 cgroup_id;
	__u32 kind;
	__u32 pid;  /* tgid */
	__u32 tid;
	__u32 ppid; /* the real parent's tgid */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 flags;
	char comm[TASK_COMM_LEN];
};
_Static_assert(sizeof(struct event_header) == 64, "event_header layout changed: update security.rs");

struct exec_event {
	struct event_header h;
	__u32 old_pid; /* differs from pid when a non-leader thread called exec */
	__u32 filename_len;
	__u32 argv_len;
	__u32 cwd_len;
	char filename[PATH_BYTES];
	char argv[ARGV_BYTES];   /* NUL-separated, as in /proc/<pid>/cmdline */
	/* Leaf first, NUL-separated components, so that no byte has to be moved in the kernel;
	 * userspace reverses them. Sized twice so every bounded write stays inside. */
	char cwd[2 * CWD_BYTES];
};
_Static_assert(sizeof(struct exec_event) == 64 + 16 + 256 + 1024 + 512, "exec_event layout changed");

struct syscall_counts {
	__u64 counts[SYSCALL_CLASSES];
};

struct exit_event {
	struct event_header h;
	__u32 exit_code; /* the wait status: code << 8 | signal */
	__u32 pad;
	struct syscall_counts counts; /* the process's final syscall counts */
};
_Static_assert(sizeof(struct exit_event) == 72 + 128, "exit_event layout changed");

struct connection_event {
	struct event_header h;
	__s32 ret;
	__s32 fd;
	__u16 family;
	__u16 protocol;
	__u16 local_port;
	__u16 remote_port;
	__u8 local_addr[16];  /* IPv4 in the first 4 bytes */
	__u8 remote_addr[16];
};
_Static_assert(sizeof(struct connection_event) == 64 + 48, "connection_event layout changed");

struct file_open_event {
	struct event_header h;
	__s32 ret;
	__u32 open_flags;
	__u32 path_len;
	__u32 prefix_len; /* bytes of the watched prefix that matched */
	char path[PATH_BYTES];
};
_Static_assert(sizeof(struct file_open_event) == 64 + 16 + 256, "file_open_event layout changed");

/* setuid family, capset, ptrace, module loads: the syscall, its result and raw arguments. */
struct syscall_event {
	struct event_header h;
	__u32 nr;
	__u32 pad;
	__s64 ret;
	__u64 args[4];
	__u32 data[4];    /* capset: effective, permitted, inheritable (low 32 bits) */
};
_Static_assert(sizeof(struct syscall_event) == 64 + 16 + 32 + 16, "syscall_event layout changed");

struct lpm_path {
	__u32 prefixlen; /* in bits */
	char data[PATH_BYTES];
};

/* Set by userspace before load. */
const volatile __u32 ignore_tgid = 0;
const volatile __u32 argv_bytes = 512;
/* Syscall number -> class (index into syscall_counts); filled from security.rs's table. */
const volatile __u8 syscall_class[SYSCALL_TABLE] = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

/* Watched path prefixes: longest-prefix match on the bytes of the path. Value: unused. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct lpm_path);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} watched_prefixes SEC(".maps");

/* A watched file or directory by identity, so that an open through a relative path, `..` or a
 * symbolic link is caught too: the kernel's s_dev and the inode number. Value: unused. */
struct inode_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, __u8);
} watched_inodes SEC(".maps");

/* A 4096-bit filter over watched_inodes (bit inode_bit() of each key set; userspace sets it
 * before adding a key and rebuilds it after removing one): most directories on an opened path
 * are ruled out by one load instead of a hash lookup. */
#define INODE_FILTER_WORDS 64
struct inode_filter {
	__u64 bits[INODE_FILTER_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inode_filter);
} watched_inode_filter SEC(".maps");

/* Mirrored by security.rs (InodeKey::filter_bit). */
static __always_inline __u32 inode_bit(__u64 ino, __u32 dev)
{
	return ((ino ^ ((__u64)dev << 32)) * 0x9E3779B97F4A7C15ULL) >> 52;
}

/* A watched file by its directory and name, so that an open of it by a relative path that
 * fails (it opened nothing to check) is caught too: the directory's s_dev and inode number, and
 * the file's name, NUL-padded. Value: unused. */
#define NAME_BYTES 64
struct name_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
	char name[NAME_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct name_key);
	__type(value, __u8);
} watched_names SEC(".maps");

/* Syscalls made by a process, per class: task-local storage of its thread-group leader, so the
 * hot path is a cached per-task slot and an atomic add (no hash, no LRU). Userspace reads it by
 * pidfd; it goes away with the process, whose final counts travel in its exit event. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct syscall_counts);
} syscall_counts SEC(".maps");

/* Scratch for the path being matched: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lpm_path);
} path_scratch SEC(".maps");

static __always_inline void fill_header(struct event_header *h, __u32 kind, struct task_struct *task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->ktime_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->euid = BPF_CORE_READ(task, cred, euid.val);
	h->flags = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

static __always_inline void *reserve(__u64 size)
{
	void *event = bpf_ringbuf_reserve(&events, size, 0);

	if (!event)
		count(COUNTER_RINGBUF_FULL);
	return event;
}

/* Wake the reader only once a batch has built up (a quarter of the ring): a storm of events then
 * costs one wake-up per batch instead of one per event. The reader also polls on a timer (the
 * agent every 250 ms), so a lone event waits at most that long. */
static __always_inline void submit(void *event)
{
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 ring = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);

	bpf_ringbuf_submit(event, pending >= ring / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	count(COUNTER_RECORDS);
}

/* Scratch for the working directory walk (bpf_loop callbacks cannot hold ring-buffer memory). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[2 * CWD_BYTES]);
} cwd_scratch SEC(".maps");

struct cwd_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u32 len;
	__u32 done;
};

/* One step up from the working directory: a component, or a crossing to the parent mount.
 * A bpf_loop callback, so the verifier checks it once instead of once per level. */
static long cwd_step(__u64 index, void *ctx)
{
	struct cwd_walk *walk = ctx;
	struct dentry *dentry = walk->dentry;
	struct vfsmount *vfsmnt = walk->vfsmnt;
	struct mount *mnt = walk->mnt;
	struct dentry *root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	const unsigned char *name;
	__u32 zero = 0;
	char *buf;
	long n;

	if (dentry == root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (dentry != root || up == mnt) {
			walk->done = 1; /* the root of the root mount (or of a detached tree) */
			return 1;
		}
		walk->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		walk->mnt = up;
		walk->vfsmnt = (struct vfsmount *)((char *)up + __builtin_offsetof(struct mount, mnt));
		return 0;
	}
	buf = bpf_map_lookup_elem(&cwd_scratch, &zero);
	if (!buf || walk->len >= CWD_BYTES)
		return 1;
	name = BPF_CORE_READ(dentry, d_name.name);
	n = bpf_probe_read_kernel_str(&buf[walk->len & (CWD_BYTES - 1)], CWD_BYTES, name);
	if (n <= 0)
		return 1;
	walk->len += n;
	walk->dentry = parent;
	return 0;
}

/* A path, leaf first: each component NUL-terminated, mount points crossed. Leaves the bytes in
 * cwd_scratch and returns their length; sets *truncated when the walk did not reach the root or
 * the components did not fit. */
static __always_inline __u32 walk_path(struct dentry *dentry, struct vfsmount *vfsmnt, int *truncated)
{
	struct cwd_walk walk = {
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = (struct mount *)((char *)vfsmnt - __builtin_offsetof(struct mount, mnt)),
	};

	bpf_loop(CWD_DEPTH, cwd_step, &walk, 0);
	*truncated = !walk.done || walk.len > CWD_BYTES;
	return walk.len & (2 * CWD_BYTES - 1);
}

/* The working directory, leaf first (see walk_path). */
static __always_inline __u32 read_cwd(struct task_struct *task, char *out, __u32 *flags)
{
	__u32 zero = 0, len;
	int truncated;
	char *buf;

	len = walk_path(BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt),
			&truncated);
	if (truncated)
		*flags |= FLAG_CWD_TRUNCATED;
	buf = bpf_map_lookup_elem(&cwd_scratch, &zero);
	if (!buf)
		return 0;
	if (bpf_probe_read_kernel(out, len, buf))
		return 0;
	return len;
}

SEC("raw_tp/sched_process_exec")
int on_exec(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct exec_event *event;
	__u64 arg_start, arg_end, len;
	const char *filename;
	long n;

	if (BPF_CORE_READ(task, tgid) == ignore_tgid)
		return 0;
	event = reserve(sizeof(*event));
	if (!event)
		return 0;
	fill_header(&event->h, EVENT_EXEC, task);
	event->old_pid = (__u32)ctx->args[1];
	filename = BPF_CORE_READ(bprm, filename);
	n = bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename);
	event->filename_len = n > 0 ? n - 1 : 0;
	if (n == sizeof(event->filename))
		event->h.flags |= FLAG_PATH_TRUNCATED;

	/* The new image's argument strings are in place when this tracepoint fires. */
	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > argv_bytes) {
		len = argv_bytes;
		event->h.flags |= FLAG_ARGV_TRUNCATED;
	}
	if (len > ARGV_BYTES)
		len = ARGV_BYTES;
	if (bpf_probe_read_user(event->argv, len, (const void *)arg_start))
		len = 0;
	event->argv_len = len;
	event->cwd_len = read_cwd(task, event->cwd, &event->h.flags);
	if (event->h.flags & (FLAG_ARGV_TRUNCATED | FLAG_CWD_TRUNCATED | FLAG_PATH_TRUNCATED))
		count(COUNTER_PATH_TRUNCATED);
	submit(event);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int on_exit(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct task_struct *p, bool group_dead): one event per process, not per thread. */
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct syscall_counts *counts;
	struct exit_event *event;

	if (!(bool)ctx->args[1] || (BPF_CORE_READ(task, flags) & PF_KTHREAD))
		return 0;
	if (BPF_CORE_READ(task, tgid) == ignore_tgid)
		return 0;
	event = reserve(sizeof(*event));
	if (!event)
		return 0;
	fill_header(&event->h, EVENT_EXIT, task);
	event->exit_code = BPF_CORE_READ(task, exit_code);
	event->pad = 0;
	/* The exiting task is current; the counts hang off its group leader. */
	counts = bpf_task_storage_get(&syscall_counts, bpf_get_current_task_btf()->group_leader, 0, 0);
	if (!counts || bpf_probe_read_kernel(&event->counts, sizeof(event->counts), counts))
		__builtin_memset(&event->counts, 0, sizeof(event->counts));
	submit(event);
	return 0;
}

static __always_inline void count_syscall(struct task_struct *task, long nr)
{
	struct syscall_counts *counts;
	__u32 class = 0;

	if (nr >= 0 && nr < SYSCALL_TABLE)
		class = syscall_class[nr & (SYSCALL_TABLE - 1)];
	counts = bpf_task_storage_get(&syscall_counts, task->group_leader, 0,
				      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!counts) {
		count(COUNTER_SYSCALL_COUNTS_FULL); /* no memory for the slot */
		return;
	}
	/* Threads of one process share the slot. */
	__sync_fetch_and_add(&counts->counts[class & (SYSCALL_CLASSES - 1)], 1);
}

/* The open file behind a file descriptor of the current task, or NULL. Typed loads down to the
 * fd array, one probe read for the slot. */
static __always_inline struct file *file_of_fd(struct task_struct *task, long fd)
{
	struct fdtable *fdt = bpf_core_cast(task, struct task_struct)->files->fdt;
	struct file **fds;
	struct file *file = 0;

	if (!fdt || fd < 0 || (__u64)fd >= fdt->max_fds)
		return 0;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return 0;
	return file;
}

/* The socket behind a file descriptor of the current task, or NULL when it is not a socket. */
static __always_inline struct sock *sock_of_fd(struct task_struct *task, int fd)
{
	struct file *file = file_of_fd(task, fd);
	struct socket *socket;

	if (!file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	socket = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(socket, sk);
}

static __always_inline void connection(struct task_struct *task, __u32 kind, int fd, long ret)
{
	struct sock *sk = sock_of_fd(task, fd);
	struct connection_event *event;
	__u16 family;

	if (!sk)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	event = reserve(sizeof(*event));
	if (!event)
		return;
	fill_header(&event->h, kind, task);
	event->ret = ret;
	event->fd = fd;
	event->family = family;
	event->protocol = BPF_CORE_READ(sk, sk_protocol);
	event->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	event->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(event->local_addr, 0, sizeof(event->local_addr));
	__builtin_memset(event->remote_addr, 0, sizeof(event->remote_addr));
	if (family == AF_INET) {
		bpf_core_read(event->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(event->remote_addr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(event->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(event->remote_addr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	submit(event);
}

/* Whether a dentry, or one of its parent directories, is a watched inode. Typed loads
 * (bpf_core_cast): no probe read per level. */
static __always_inline int watched_dentry(struct dentry *start)
{
	struct dentry *dentry = bpf_core_cast(start, struct dentry);
	struct inode_key key = {};
	__u32 zero = 0;
	struct inode_filter *filter = bpf_map_lookup_elem(&watched_inode_filter, &zero);

	if (!filter)
		return 0;
	for (int i = 0; i < INODE_DEPTH; i++) {
		struct inode *inode = dentry->d_inode;
		struct dentry *parent;
		__u32 bit;

		if (!inode)
			return 0;
		key.ino = inode->i_ino;
		key.dev = inode->i_sb->s_dev;
		bit = inode_bit(key.ino, key.dev);
		if ((filter->bits[(bit >> 6) & (INODE_FILTER_WORDS - 1)] & (1ULL << (bit & 63))) &&
		    bpf_map_lookup_elem(&watched_inodes, &key))
			return 1;
		parent = dentry->d_parent;
		if (!parent || parent == dentry)
			return 0;
		dentry = parent;
	}
	return 0;
}

/* Whether an opened file, or one of its parent directories, is a watched inode. */
static __always_inline int watched_by_inode(struct file *opened)
{
	struct file *file = bpf_core_cast(opened, struct file);

	return watched_dentry(file->f_path.dentry);
}

/* Whether a relative path that failed to open, looked up from directory `base`, names a watched
 * file: `base` is (under) a watched directory and the path does not climb out with `..`, or the
 * path is a single name that `watched_names` holds for `base`. */
static __always_inline int watched_failed_relative(struct dentry *base, const char *rel)
{
	struct name_key key = {};
	struct inode *inode;

	if (!(rel[0] == '.' && rel[1] == '.') && watched_dentry(base))
		return 1;
	for (int i = 0; i < NAME_BYTES; i++) {
		char c = rel[i];

		if (c == 0)
			break;
		if (c == '/')
			return 0;
		key.name[i] = c;
	}
	inode = BPF_CORE_READ(base, d_inode);
	if (!inode)
		return 0;
	key.ino = BPF_CORE_READ(inode, i_ino);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&watched_names, &key) != 0;
}

#define AT_FDCWD -100

static __always_inline void file_open(struct task_struct *task, long dirfd, const char *user_path,
				      __u32 open_flags, long ret)
{
	__u32 zero = 0;
	struct lpm_path *key = bpf_map_lookup_elem(&path_scratch, &zero);
	struct file_open_event *event;
	struct file *file = 0;
	struct dentry *base = 0;
	struct vfsmount *base_mnt = 0;
	int by_path = 0;
	long n;

	if (!key)
		return;
	n = bpf_probe_read_user_str(key->data, sizeof(key->data), user_path);
	if (n <= 1)
		return;
	if (key->data[0] == '/') {
		key->prefixlen = (n - 1) * 8;
		by_path = bpf_map_lookup_elem(&watched_prefixes, key) != 0;
	} else {
		count(COUNTER_OPEN_RELATIVE);
	}
	if (!by_path && ret < 0) {
		/* A failed open opened nothing to check. A relative path (of at most NAME_BYTES - 1
		 * bytes) is judged by the directory it was looked up from; an absolute one that no
		 * prefix matched could only name a watched file through `..` or a symbolic link. */
		if (key->data[0] == '/' || n > NAME_BYTES)
			return;
		if (dirfd == AT_FDCWD) {
			base = BPF_CORE_READ(task, fs, pwd.dentry);
			base_mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		} else {
			struct file *dir = file_of_fd(task, dirfd);

			if (!dir)
				return;
			base = BPF_CORE_READ(dir, f_path.dentry);
			base_mnt = BPF_CORE_READ(dir, f_path.mnt);
		}
		if (!base || !watched_failed_relative(base, key->data))
			return;
	} else if (!by_path) {
		/* A relative path, `..` or a symbolic link can still name a watched file: check what
		 * was opened. */
		file = file_of_fd(task, ret);
		if (!file || !watched_by_inode(file))
			return;
	}
	event = reserve(sizeof(*event));
	if (!event)
		return;
	fill_header(&event->h, EVENT_FILE_OPEN, task);
	event->ret = ret;
	event->open_flags = open_flags;
	event->prefix_len = 0;
	if (by_path) {
		event->path_len = n - 1;
		if (n == sizeof(key->data)) {
			event->h.flags |= FLAG_PATH_TRUNCATED;
			count(COUNTER_PATH_TRUNCATED);
		}
		bpf_probe_read_kernel(event->path, sizeof(event->path), key->data);
	} else if (base) {
		/* The relative path as one component, then the directory it was looked up from, leaf
		 * first: userspace joins them as for a resolved path. */
		int truncated = 0;
		__u32 off = n & (2 * NAME_BYTES - 1);
		__u32 len = walk_path(base, base_mnt, &truncated);
		char *buf = bpf_map_lookup_elem(&cwd_scratch, &zero);

		if (len > PATH_BYTES - 2 * NAME_BYTES - 1) {
			len = PATH_BYTES - 2 * NAME_BYTES - 1;
			truncated = 1;
		}
		if (bpf_probe_read_kernel(event->path, off, key->data))
			off = 0;
		if (!buf || bpf_probe_read_kernel(event->path + off, len & (2 * NAME_BYTES - 1), buf))
			len = 0;
		event->path_len = off + len;
		event->h.flags |= FLAG_PATH_RESOLVED;
		if (truncated) {
			event->h.flags |= FLAG_PATH_TRUNCATED;
			count(COUNTER_PATH_TRUNCATED);
		}
	} else {
		/* The path as the kernel resolved it, leaf first. */
		int truncated = 0;
		__u32 len = walk_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt),
				      &truncated);
		char *buf = bpf_map_lookup_elem(&cwd_scratch, &zero);

		if (len > PATH_BYTES - 1) {
			len = PATH_BYTES - 1;
			truncated = 1;
		}
		if (!buf || bpf_probe_read_kernel(event->path, len & (PATH_BYTES - 1), buf))
			len = 0;
		event->path_len = len;
		event->h.flags |= FLAG_PATH_RESOLVED;
		if (truncated) {
			event->h.flags |= FLAG_PATH_TRUNCATED;
			count(COUNTER_PATH_TRUNCATED);
		}
	}
	submit(event);
}

static __always_inline void syscall_event(struct task_struct *task, __u32 kind, __u32 nr, long ret,
					  struct pt_regs *regs)
{
	struct syscall_event *event = reserve(sizeof(*event));

	if (!event)
		return;
	fill_header(&event->h, kind, task);
	event->nr = nr;
	event->pad = 0;
	event->ret = ret;
	event->args[0] = ARG1(regs);
	event->args[1] = ARG2(regs);
	event->args[2] = ARG3(regs);
	event->args[3] = ARG4(regs);
	__builtin_memset(event->data, 0, sizeof(event->data));
	if (nr == NR_CAPSET) {
		/* struct __user_cap_data_struct { effective, permitted, inheritable } */
		bpf_probe_read_user(event->data, 3 * sizeof(__u32), (const void *)event->args[1]);
	}
	submit(event);
}

/* ptrace requests that start tracing or change the tracee; reads are left out. */
static __always_inline int ptrace_request_watched(long request)
{
	switch (request) {
	case 0:      /* PTRACE_TRACEME */
	case 4:      /* PTRACE_POKETEXT */
	case 5:      /* PTRACE_POKEDATA */
	case 6:      /* PTRACE_POKEUSER */
	case 13:     /* PTRACE_SETREGS */
	case 15:     /* PTRACE_SETFPREGS */
	case 16:     /* PTRACE_ATTACH */
	case 0x4205: /* PTRACE_SETREGSET */
	case 0x4206: /* PTRACE_SEIZE */
		return 1;
	default:
		return 0;
	}
}

SEC("raw_tp/sys_exit")
int on_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct pt_regs *regs, long ret): the arguments are still in regs, read with
	 * typed loads: on this path, run for every syscall, a probe read costs more than the rest
	 * of the program. */
	struct pt_regs *regs = bpf_core_cast((void *)ctx->args[0], struct pt_regs);
	long ret = (long)ctx->args[1];
	struct task_struct *me = bpf_get_current_task_btf();
	__u32 tgid = me->tgid;
	struct task_struct *task;
	long nr;

	if (tgid == ignore_tgid || tgid == 0)
		return 0;
	nr = regs->orig_ax;
	count_syscall(me, nr);
	switch (nr) {
	case NR_CONNECT:
		/* Failed connects are reported too (probes of closed ports), but not EINPROGRESS's
		 * later outcome: that needs a sock tracepoint. */
		task = (struct task_struct *)bpf_get_current_task();
		connection(task, EVENT_CONNECT, (int)ARG1(regs), ret);
		return 0;
	case NR_ACCEPT:
	case NR_ACCEPT4:
		if (ret < 0)
			return 0;
		task = (struct task_struct *)bpf_get_current_task();
		connection(task, EVENT_ACCEPT, (int)ret, ret);
		return 0;
	case NR_OPEN:
	case NR_CREAT:
		task = (struct task_struct *)bpf_get_current_task();
		file_open(task, AT_FDCWD, (const char *)ARG1(regs),
			  nr == NR_CREAT ? 0x241 /* O_CREAT|O_WRONLY|O_TRUNC */ :
					   (__u32)ARG2(regs),
			  ret);
		return 0;
	case NR_OPENAT:
		task = (struct task_struct *)bpf_get_current_task();
		file_open(task, (int)ARG1(regs),
			  (const char *)ARG2(regs),
			  (__u32)ARG3(regs), ret);
		return 0;
	case NR_OPENAT2: {
		__u64 how_flags = 0;

		bpf_probe_read_user(&how_flags, sizeof(how_flags),
				    (const void *)ARG3(regs));
		task = (struct task_struct *)bpf_get_current_task();
		file_open(task, (int)ARG1(regs),
			  (const char *)ARG2(regs), (__u32)how_flags, ret);
		return 0;
	}
	case NR_SETUID:
	case NR_SETGID:
	case NR_SETREUID:
	case NR_SETREGID:
	case NR_SETGROUPS:
	case NR_SETRESUID:
	case NR_SETRESGID:
	case NR_SETFSUID:
	case NR_SETFSGID:
	case NR_CAPSET:
		task = (struct task_struct *)bpf_get_current_task();
		syscall_event(task, EVENT_PRIVILEGE, nr, ret, regs);
		return 0;
	case NR_PTRACE:
		if (!ptrace_request_watched((long)ARG1(regs)))
			return 0;
		task = (struct task_struct *)bpf_get_current_task();
		syscall_event(task, EVENT_PTRACE, nr, ret, regs);
		return 0;
	case NR_INIT_MODULE:
	case NR_FINIT_MODULE:
		task = (struct task_struct *)bpf_get_current_task();
		syscall_event(task, EVENT_MODULE, nr, ret, regs);
		return 0;
	default:
		return 0;
	}
}
