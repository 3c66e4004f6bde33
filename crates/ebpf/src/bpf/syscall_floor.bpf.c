// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * An empty program on the sys_exit raw tracepoint: what any syscall-level hook costs before it
 * does anything (the kernel's syscall-tracing slow path and the program call). `oxeye lab bench
 * sensor` runs its storms under it to show the floor beside the security sensor's cost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("raw_tp/sys_exit")
int syscall_floor(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
