//! CPU placement of the packet threads.

/// Pins the calling thread to `cpu` (`None`: leaves it where it is); false
/// if the kernel refused.
pub fn pin(cpu: Option<usize>) -> bool {
    match cpu {
        Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
        None => true,
    }
}

/// The CPUs this process may run on, if the kernel says.
pub fn allowed() -> Option<Vec<usize>> {
    core_affinity::get_core_ids()
        .filter(|ids| !ids.is_empty())
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
}
