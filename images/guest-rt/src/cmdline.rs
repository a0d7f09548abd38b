//! Command-line words of the form `key=value` (Slipway guests' `bootargs`).

/// The value of the first whitespace-separated word `key=value` in `cmdline`, if any.
pub fn word_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::word_value;

    #[test]
    fn finds_the_first_matching_word() {
        let cmdline = "name=hello-a  work=20000 stay work=1 named=x";
        assert_eq!(word_value(cmdline, "name"), Some("hello-a"));
        assert_eq!(word_value(cmdline, "work"), Some("20000"));
        assert_eq!(word_value(cmdline, "stay"), None);
        assert_eq!(word_value(cmdline, "named"), Some("x"));
        assert_eq!(word_value(cmdline, "spin"), None);
        assert_eq!(word_value("test=", "test"), Some(""));
        assert_eq!(word_value("", "test"), None);
    }
}
