//! Shared loading: the checks that explain a refusal before libbpf does (root, BTF), the capture
//! of libbpf's and the verifier's messages so a refused program says why, and ownership of a
//! loaded skeleton.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Mutex;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, PrintLevel};

use crate::error::{EbpfError, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// How many lines of libbpf's output a load error keeps: the verifier's verdict is at the end.
const LOG_TAIL_LINES: usize = 40;

/// Refuses early, with the reason, what libbpf would refuse later with a bare errno.
pub fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    privilege_error(uid, effective_capabilities().unwrap_or(0)).map_or(Ok(()), Err)?;
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(EbpfError::NoBtf);
    }
    Ok(())
}

/// Root, or the capabilities that replace it for BPF since 5.8.
fn privilege_error(uid: u32, effective_capabilities: u64) -> Option<EbpfError> {
    let has = |cap: u32| effective_capabilities & (1u64 << cap) != 0;
    let allowed = uid == 0 || has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    (!allowed).then_some(EbpfError::NotRoot { uid })
}

/// Map sizes a config asks for, checked before libbpf sees them.
pub(crate) fn validate_maps(stack_map_entries: u32, ring_buffer_bytes: u32) -> Result<()> {
    if stack_map_entries == 0 {
        return Err(EbpfError::Config(
            "stack_map_entries must be at least 1, found 0".into(),
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < page {
        return Err(EbpfError::Config(format!(
            "ring_buffer_bytes must be a power of two of at least {page}, found {ring_buffer_bytes}"
        )));
    }
    Ok(())
}

fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// libbpf's messages while a load is under way; `None` when nobody is loading.
static LOAD_LOG: Mutex<Option<Vec<String>>> = Mutex::new(None);
/// One load at a time, so each error carries its own log.
static LOADING: Mutex<()> = Mutex::new(());

fn libbpf_print(level: PrintLevel, message: String) {
    let message = message.trim_end();
    match level {
        PrintLevel::Warn => tracing::warn!(target: "libbpf", "{message}"),
        PrintLevel::Info => tracing::info!(target: "libbpf", "{message}"),
        PrintLevel::Debug => tracing::debug!(target: "libbpf", "{message}"),
    }
    if level == PrintLevel::Debug {
        return;
    }
    if let Ok(mut log) = LOAD_LOG.lock()
        && let Some(lines) = log.as_mut()
    {
        lines.extend(message.lines().map(str::to_string));
    }
}

/// A loaded skeleton that owns the storage it borrows from. libbpf-rs skeletons borrow an
/// `OpenObject` slot for their whole life, which a struct could not hold next to them; this keeps
/// the slot on the heap and frees it after the skeleton.
pub(crate) struct LoadedSkel<S> {
    skel: ManuallyDrop<S>,
    slot: NonNull<MaybeUninit<OpenObject>>,
}

// SAFETY: the slot is only touched by the skeleton (which libbpf-rs declares Send) and by Drop.
unsafe impl<S: Send> Send for LoadedSkel<S> {}

impl<S> LoadedSkel<S> {
    /// Opens the object, lets `configure` size maps and set read-only data, and loads it. Load
    /// failures carry what the verifier said.
    pub(crate) fn load<B, O>(
        object: &'static str,
        builder: B,
        configure: impl FnOnce(&mut O) -> Result<()>,
    ) -> Result<Self>
    where
        B: SkelBuilder<'static, Output = O>,
        O: OpenSkel<'static, Output = S>,
    {
        check_prerequisites()?;
        let slot = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        let free_slot = || {
            // SAFETY: the slot came from Box::leak above and nothing borrows it any more.
            drop(unsafe { Box::from_raw(slot.as_ptr()) });
        };
        let _one_at_a_time = LOADING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
        set_load_log(Some(Vec::new()));
        // SAFETY: the slot lives until Drop, which drops the skeleton first; so the 'static
        // borrow handed to libbpf-rs never outlives it.
        let storage: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *slot.as_ptr() };
        let result = builder
            .open(storage)
            .map_err(|e| (e.to_string(), None))
            .and_then(|mut open| match configure(&mut open) {
                Ok(()) => open.load().map_err(|e| (e.to_string(), None)),
                Err(e) => Err((String::new(), Some(e))),
            });
        let log = set_load_log(None).unwrap_or_default();
        match result {
            Ok(skel) => Ok(Self {
                skel: ManuallyDrop::new(skel),
                slot,
            }),
            Err((message, configure_error)) => {
                free_slot();
                if let Some(e) = configure_error {
                    return Err(e);
                }
                let tail = log.len().saturating_sub(LOG_TAIL_LINES);
                Err(EbpfError::Load {
                    object,
                    message,
                    verifier_log: log[tail..].join("\n"),
                })
            }
        }
    }
}

fn set_load_log(value: Option<Vec<String>>) -> Option<Vec<String>> {
    let mut log = LOAD_LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    std::mem::replace(&mut *log, value)
}

impl<S> std::ops::Deref for LoadedSkel<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.skel
    }
}

impl<S> std::ops::DerefMut for LoadedSkel<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.skel
    }
}

impl<S> Drop for LoadedSkel<S> {
    fn drop(&mut self) {
        // SAFETY: the skeleton is dropped exactly once, here, before the slot it borrows.
        unsafe { ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: the slot came from Box::leak in `load` and the skeleton is gone.
        drop(unsafe { Box::from_raw(self.slot.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_users_are_told_what_is_missing() {
        let error = privilege_error(1000, 0).expect("refused");
        assert_eq!(
            error.to_string(),
            "eBPF needs root (or CAP_BPF with CAP_PERFMON): running as uid 1000 with neither"
        );
        assert!(privilege_error(0, 0).is_none());
        assert!(privilege_error(1000, (1 << CAP_BPF) | (1 << CAP_PERFMON)).is_none());
        assert!(privilege_error(1000, 1 << CAP_BPF).is_some());
    }
}
