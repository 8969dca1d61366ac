//! Work on every core: a long list of independent items (files read and parsed, contacts
//! prepared, listing members hashed) split into contiguous parts, one thread each.

/// `f` over `items`, results in the same order. Below `least` items (4 in debug builds, so
/// that tests take the split path) on the calling thread; otherwise on up to four threads.
pub fn map<T: Send, R: Send>(items: Vec<T>, least: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    map_on(threads, items, least, f)
}

/// Threads for work that mostly waits on the disk, such as reading files not in memory: a
/// disk serves many reads at once, a thread waits on one. Reading 100k small files just dropped
/// from the page cache took 3.3 s on two threads, 1.4 s on sixteen, 1.2 s on thirty-two.
pub const READERS: usize = 16;

/// [`map`] on up to `threads` threads (for [`READERS`], say), whatever the number of cores.
pub fn map_on<T: Send, R: Send>(
    threads: usize,
    items: Vec<T>,
    least: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let least = if cfg!(debug_assertions) { 4 } else { least };
    if items.len() < least.max(2) || threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let size = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > size {
        let tail = rest.split_off(size);
        parts.push(std::mem::replace(&mut rest, tail));
    }
    parts.push(rest);
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_order_of_the_items() {
        for n in [0usize, 1, 3, 4, 5, 17, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let out = super::map(items, 4, |i| (i, std::thread::current().id()));
            assert_eq!(
                out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..n).collect::<Vec<_>>()
            );
            if n >= 4 && std::thread::available_parallelism().is_ok_and(|p| p.get() > 1) {
                assert_ne!(out[0].1, out[n - 1].1, "{n} items on one thread");
            }
        }
    }

    #[test]
    fn readers_take_more_threads_than_cores_and_keep_the_order() {
        let items: Vec<usize> = (0..1000).collect();
        let out = super::map_on(super::READERS, items, 4, |i| {
            (i, std::thread::current().id())
        });
        assert_eq!(
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..1000).collect::<Vec<_>>()
        );
        let threads: std::collections::HashSet<_> = out.iter().map(|(_, t)| *t).collect();
        assert_eq!(threads.len(), super::READERS);
    }
}
