//! bilge
