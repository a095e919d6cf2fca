//! State machine behaviour.
