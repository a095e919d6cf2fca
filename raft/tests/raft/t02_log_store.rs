//! Log store: reopen, bad files.
