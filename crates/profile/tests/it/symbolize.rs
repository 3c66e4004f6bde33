use profile::{FrameKind, RawStack, Symbolizer};

#[inline(never)]
fn oxeye_profile_test_marker() -> u64 {
    std::hint::black_box(42)
}

pub fn marker_address() -> u64 {
    oxeye_profile_test_marker as *const () as usize as u64
}

#[test]
fn addresses_in_this_process_resolve_to_their_function_once() {
    assert_eq!(oxeye_profile_test_marker(), 42);
    let mut symbolizer = Symbolizer::new();
    let raw = RawStack {
        pid: std::process::id(),
        comm: "it",
        user: &[marker_address()],
        user_cut_short: false,
        kernel: &[],
    };
    let stack = symbolizer.symbolize(&raw);
    let leaf = &stack.frames[0];
    assert_eq!(leaf.kind, FrameKind::User);
    assert!(
        leaf.function.ends_with("oxeye_profile_test_marker"),
        "{leaf:?}"
    );
    assert!(
        leaf.file
            .as_deref()
            .is_some_and(|f| f.ends_with("symbolize.rs")),
        "{leaf:?}"
    );
    // One frame that is not a thread's start: the stack does not reach its root.
    assert!(stack.truncated);

    let again = symbolizer.symbolize(&raw);
    assert_eq!(again, stack);
    let stats = symbolizer.stats();
    assert_eq!(
        (stats.user_addresses, stats.user_resolved),
        (2, 1),
        "{stats:?}"
    );
}

#[test]
fn kernel_addresses_resolve_through_kallsyms() {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").expect("read /proc/kallsyms");
    let address = kallsyms.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let address = u64::from_str_radix(parts.next()?, 16).ok()?;
        let kind = parts.next()?;
        let name = parts.next()?;
        (name == "schedule" && kind.eq_ignore_ascii_case("t")).then_some(address)
    });
    let Some(address) = address.filter(|&a| a != 0) else {
        // Unprivileged readers see zeros.
        assert!(
            std::env::var("OXEYE_REQUIRE_EBPF").as_deref() != Ok("1"),
            "kernel addresses are hidden, but OXEYE_REQUIRE_EBPF=1"
        );
        eprintln!("skipped: kernel addresses hidden (not root)");
        return;
    };
    let mut symbolizer = Symbolizer::new();
    // Loading them up front works where addresses are visible (and is what the agent does).
    assert!(symbolizer.load_kernel_symbols());
    let stack = symbolizer.symbolize(&RawStack {
        pid: 0,
        comm: "",
        user: &[],
        user_cut_short: false,
        kernel: &[address + 4],
    });
    assert_eq!(&*stack.frames[0].function, "schedule", "{stack:?}");
    assert_eq!(stack.frames[0].kind, FrameKind::Kernel);
    assert_eq!(&*stack.frames[0].module, "[kernel]");
    // A kernel-only stack (a kernel thread) is whole.
    assert!(!stack.truncated);
}

#[test]
fn a_stack_seen_again_is_shared_not_symbolized_again() {
    let mut symbolizer = Symbolizer::new();
    let pid = std::process::id();
    let user = [marker_address()];
    let raw = RawStack {
        pid,
        comm: "it",
        user: &user,
        user_cut_short: false,
        kernel: &[],
    };
    let (id, stack) = symbolizer.symbolize_interned(&raw);
    assert_eq!(id, stack.id());
    assert_eq!(*stack, symbolizer.symbolize(&raw));
    let (again_id, again) = symbolizer.symbolize_interned(&raw);
    assert_eq!(again_id, id);
    assert!(
        std::sync::Arc::ptr_eq(&stack, &again),
        "served from the cache"
    );
    // Marked cut short by the sampler, the same addresses are a truncated stack (this one is
    // anyway: one frame that is not a thread's start).
    let (_, cut) = symbolizer.symbolize_interned(&RawStack {
        user_cut_short: true,
        ..raw
    });
    assert!(cut.truncated);

    // An address in no mapping may be explained later (a library loaded, a perf map written):
    // it is symbolized each time.
    let unmapped = [0x10];
    let raw = RawStack {
        user: &unmapped,
        ..raw
    };
    let (_, first) = symbolizer.symbolize_interned(&raw);
    let (_, second) = symbolizer.symbolize_interned(&raw);
    assert_eq!(&*first.frames[0].function, "[unknown]");
    assert!(!std::sync::Arc::ptr_eq(&first, &second));
}
