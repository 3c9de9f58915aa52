//! Landlock and seccomp, applied by pid 1 to itself before the guest server starts, so every
//! process in the sandbox inherits them and none can lift them (`no_new_privs`).

use std::collections::BTreeMap;
use std::path::Path;

use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::protocol::{CONTROL_MOUNT, WORKSPACE_MOUNT};

/// System calls no agent needs and that widen the kernel surface an escape would use.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_lookup_dcookie,
];

/// `clone` flags that would create namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `writable` are the configured writable mounts, on top of the usual scratch places.
pub fn apply(writable: &[&Path]) -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    landlock(writable)?;
    for program in seccomp_programs()? {
        seccompiler::apply_filter(&program).map_err(|e| format!("install seccomp filter: {e}"))?;
    }
    Ok(())
}

/// Read and execute anywhere in the (already read-only) root; write only to the workspace,
/// /tmp, /dev/shm, the control directory, writable mounts and the character devices.
fn landlock(writable: &[&Path]) -> Result<(), String> {
    let abi = ABI::V5;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], read)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                [WORKSPACE_MOUNT, "/tmp", "/dev/shm", CONTROL_MOUNT],
                all,
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(writable, all)))
        // Terminal ioctls (window size, controlling terminal) on the sandbox's own devices.
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/dev"],
                read | AccessFs::WriteFile | AccessFs::IoctlDev,
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        // Kernels without Landlock still have the read-only mounts and the uid map; say so.
        eprintln!("berth-guest: Landlock is not supported by this kernel; relying on mounts alone");
    }
    Ok(())
}

fn seccomp_programs() -> Result<Vec<BpfProgram>, String> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, vec![])).collect();
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*flag), *flag)
            .map_err(|e| format!("seccomp: {e}"))?;
        clone_rules.push(SeccompRule::new(vec![condition]).map_err(|e| format!("seccomp: {e}"))?);
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    // clone3 passes its flags in memory a filter cannot read; answering ENOSYS makes libc fall
    // back to clone(2), whose flags the filter above checks.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    [deny, clone3]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(|e| format!("seccomp: {e}")))
        .collect()
}
