//! How many threads inference should use by default: the CPUs this process may
//! actually run on, not the host's core count.

/// Lambda gives one vCPU per 1,769 MB of configured memory, up to 6.
const LAMBDA_MB_PER_VCPU: f64 = 1769.0;
const LAMBDA_MAX_VCPUS: usize = 6;

/// The default thread count for this process.
///
/// Inside Lambda (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE` set) this is the vCPUs the memory
/// size buys. Elsewhere it is [`std::thread::available_parallelism`], which honours the
/// cgroup CPU quota of a Kubernetes pod and the process's CPU affinity.
pub fn default_threads() -> usize {
    if let Some(mb) = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        return lambda_vcpus(mb);
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// vCPUs Lambda allocates for a function with `memory_mb` of memory.
pub fn lambda_vcpus(memory_mb: u32) -> usize {
    ((f64::from(memory_mb) / LAMBDA_MB_PER_VCPU).ceil() as usize).clamp(1, LAMBDA_MAX_VCPUS)
}

/// Tells candle's matrix multiplication how many pieces to split work into. It reads
/// `RAYON_NUM_THREADS` on every call, so binaries call this once at the top of `main`,
/// before any other thread exists.
///
/// # Safety
/// Mutates the process environment: no other thread may read or write the
/// environment concurrently.
pub unsafe fn export_thread_count(threads: usize) {
    // SAFETY: forwarded to the caller (single-threaded at this point).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_memory_buys_vcpus_like_aws() {
        assert_eq!(lambda_vcpus(128), 1);
        assert_eq!(lambda_vcpus(1769), 1);
        assert_eq!(lambda_vcpus(1770), 2);
        assert_eq!(lambda_vcpus(3008), 2);
        assert_eq!(lambda_vcpus(10240), 6);
    }

    #[test]
    fn default_is_at_least_one() {
        assert!(default_threads() >= 1);
    }
}
