//! idem adapter for gbp (work in progress).
