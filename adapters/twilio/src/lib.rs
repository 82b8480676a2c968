//! idem adapter for twilio (work in progress).
