//! This machine's own name, as builds record it and as the webhook recognises itself by.

/// The kernel's host name, when it has a non-empty, valid UTF-8 one.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_host_name() {
        let h = super::hostname();
        assert!(h.is_some_and(|h| !h.contains('\0')));
    }
}
