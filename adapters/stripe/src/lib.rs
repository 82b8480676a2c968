//! idem adapter for stripe (work in progress).
