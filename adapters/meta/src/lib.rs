//! idem adapter for meta (work in progress).
