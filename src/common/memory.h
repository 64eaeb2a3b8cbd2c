// File: common/memory.h
//
// Hands freed memory back to the OS. Allocators keep freed pages for reuse: after a request of
// many megabytes (a 30 MB prompt) the process would otherwise keep that much resident for good.
// Works with tcmalloc (the kvroute binary's allocator, docs/adr/0006) and with glibc malloc.
//
// Thread-safety: release_free_memory() may be called from any thread (the HTTP server's workers
// call it). A mutex guards the pending flag and the start of the one background thread, which
// does the release outside the lock; it is joined at process exit.
#pragma once

namespace kvroute {

// Returns at once: the release (madvise over every free page: tens of milliseconds after a large
// request) runs on a background thread, made on first use; calls while one runs are merged.
// Thread-safe.
void release_free_memory();

}  // namespace kvroute
