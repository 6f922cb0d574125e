//! The kubelet's rules for matching an image against a `matchImages` pattern
//! or an auth key.
//!
//! Both sides are read as URLs without a scheme. The host is split on dots and
//! both must have the same number of labels; each label of the pattern is a
//! glob (`*`, `?`, `[a-z]`) that can never cross a dot. Ports must be equal, so
//! a pattern without a port does not match an image with one. The pattern's
//! path must be a plain string prefix of the image's path.
//!
//! These rules decide which registry receives which secret, so they are ported
//! exactly, including the cases that surprise people.

/// A `matchImages` entry or auth key, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPattern {
    labels: Vec<String>,
    port: String,
    path: String,
}

impl RegistryPattern {
    /// Parses a pattern as the kubelet parses a `matchImages` entry.
    pub fn parse(pattern: &str) -> RegistryPattern {
        let (host, port, path) = split_schemeless(pattern);
        RegistryPattern {
            labels: host.split('.').map(str::to_string).collect(),
            port: port.to_string(),
            path: path.to_string(),
        }
    }

    /// Parses an auth key the way the kubelet's keyring does: an `http(s)://`
    /// prefix is allowed, and a path of `/v1/` or `/v2/` means the whole registry.
    pub fn parse_auth_key(key: &str) -> RegistryPattern {
        let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        let (host, port, path) = split_schemeless(key);
        let path = if path.starts_with("/v2/") || path.starts_with("/v1/") { &path[3..] } else { path };
        let path = if path == "/" { "" } else { path };
        RegistryPattern {
            labels: host.split('.').map(str::to_string).collect(),
            port: port.to_string(),
            path: path.to_string(),
        }
    }

    /// Whether `image` (a schemeless reference such as `host:port/path`) matches.
    pub fn matches(&self, image: &str) -> bool {
        let (host, port, path) = split_schemeless(image);
        let labels: Vec<&str> = host.split('.').collect();
        self.port == port
            && self.labels.len() == labels.len()
            && path.starts_with(self.path.as_str())
            && self.labels.iter().zip(labels).all(|(pattern, label)| glob_matches(pattern.as_bytes(), label.as_bytes()))
    }
}

/// The kubelet's `URLsMatchStr`: whether `target` matches the glob `pattern`.
pub fn urls_match(pattern: &str, target: &str) -> bool {
    RegistryPattern::parse(pattern).matches(target)
}

/// Splits `host[:port][/path]` the way Go's `url.Parse("https://" + s)` and
/// `net.SplitHostPort` do: user information before an `@` is dropped, and a
/// host whose port cannot be split keeps the colon in its last label.
fn split_schemeless(value: &str) -> (&str, &str, &str) {
    let end = value.find(['/', '?', '#']).unwrap_or(value.len());
    let (authority, rest) = value.split_at(end);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port, path),
        _ => (authority, "", path),
    }
}

/// Go's `filepath.Match` for one host label: `*` is any run of characters,
/// `?` any one character, `[...]` a class (with `^` or `!` to negate and `-`
/// ranges), `\` escapes. A malformed pattern matches nothing.
///
/// Iterative, backtracking only to the last `*`: at most pattern × text steps
/// whatever the input (a recursive matcher takes exponential time on `*a*a*…b`,
/// which fuzzing found).
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after a mismatch: just past the last `*`, and the text
    // position that star has swallowed up to.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            resume = Some((p, t));
            continue;
        }
        if let Some(next) = pattern.get(p).and_then(|_| single_match(pattern, p, text[t])) {
            p = next;
            t += 1;
            continue;
        }
        match resume {
            Some((after_star, swallowed)) => {
                p = after_star;
                t = swallowed + 1;
                resume = Some((after_star, swallowed + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// If the pattern item at `p` (not a `*`) matches `c`, the index after it.
fn single_match(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => {
            let end = class_end(&pattern[p..])?;
            class_matches(&pattern[p + 1..p + end], c).then_some(p + end + 1)
        }
        b'\\' => (pattern.get(p + 1) == Some(&c)).then_some(p + 2),
        literal => (literal == c).then_some(p + 1),
    }
}

/// The index of the `]` closing the class that opens `pattern`.
fn class_end(pattern: &[u8]) -> Option<usize> {
    let mut i = 1;
    if matches!(pattern.get(i), Some(b'^' | b'!')) {
        i += 1;
    }
    // A class must hold at least one item, so a `]` right here is literal... in
    // Go it is an error; either way such a pattern matches nothing useful.
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => i += 2,
            b']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negated, items) = match class.first() {
        Some(b'^' | b'!') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut matched = false;
    let mut i = 0;
    while i < items.len() {
        let mut low = items[i];
        if low == b'\\' {
            i += 1;
            low = match items.get(i) {
                Some(&b) => b,
                None => return false,
            };
        }
        if items.get(i + 1) == Some(&b'-') && i + 2 < items.len() {
            let high = items[i + 2];
            matched |= low <= c && c <= high;
            i += 3;
        } else {
            matched |= low == c;
            i += 1;
        }
    }
    matched != negated
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the glob_match fuzz target: the recursive matcher took
    /// exponential time on many stars that almost match.
    #[test]
    fn many_stars_take_linear_time() {
        let pattern = format!("{}b", "*a".repeat(40));
        let started = std::time::Instant::now();
        assert!(!glob_matches(pattern.as_bytes(), "a".repeat(200).as_bytes()));
        assert!(glob_matches(pattern.as_bytes(), format!("{}b", "a".repeat(200)).as_bytes()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn globs_like_go() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a[", "a", false),
            ("a[", "a[", false),
            ("*[", "x", false),
            ("**b", "ab", true),
        ] {
            assert_eq!(glob_matches(pattern.as_bytes(), text.as_bytes()), expected, "{pattern:?} {text:?}");
        }
    }

    /// The kubelet's own matching cases (pkg/credentialprovider keyring tests),
    /// restated: (pattern, image, expected).
    const URL_CASES: &[(&str, &str, bool)] = &[
        // A wildcard label matches exactly one label, anywhere in the host.
        ("*.kubernetes.io", "prefix.kubernetes.io", true),
        ("prefix.*.io", "prefix.kubernetes.io", true),
        ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
        // Paths are prefixes.
        ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
        ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
        // Ports must be equal.
        ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", true),
        ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", true),
        ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", false),
        ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", false),
        // Label counts must be equal: a wildcard never spans a dot or stands for nothing.
        ("*.kubernetes.io", "kubernetes.io", false),
        ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
        ("*.*.kubernetes.io", "kubernetes.io", false),
        // Every label must match.
        ("kubernetes.io", "kubernetes.com", false),
        ("k*.io", "quay.io", false),
        ("suffix.*.io", "prefix.docker.io/foo/bar", false),
        ("hello.kubernetes.io", "world.mesos.org/foo/bar", false),
        // A pattern with a port matches an image with that port and any path.
        ("prefix.docker.io:1111", "prefix.docker.io:1111/path/foo/bar", true),
        ("*.docker.io:1111", "prefix.docker.io:1111/path/foo/bar", true),
        ("prefix.*.io:8888", "prefix.docker.io:8888/foo/bar", true),
        // A colon inside the path is part of the path, not a port.
        ("*.docker.io/path:1111", "prefix.docker.io/path:1111/foo/bar", true),
        ("prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111/foo/bar", false),
        // Lookalikes: a suffix or a path that names another registry is not that registry.
        ("*.dkr.ecr.*.amazonaws.com", "1.dkr.ecr.us-east-1.amazonaws.com.evil.io/x", false),
        ("gcr.io", "evil.io/gcr.io/x", false),
        ("*.azurecr.io", "x.azurecr.io@evil.io/x", false),
    ];

    #[test]
    fn kubelet_url_cases() {
        for &(pattern, image, expected) in URL_CASES {
            assert_eq!(urls_match(pattern, image), expected, "{pattern} vs {image}");
        }
    }

    /// The kubelet's keyring cases: auth keys with schemes and /v1/ or /v2/ paths.
    #[test]
    fn kubelet_auth_key_cases() {
        let hits: &[(&str, &str)] = &[
            ("https://hello.kubernetes.io", "hello.kubernetes.io"),
            ("https://*.docker.io", "prefix.docker.io"),
            ("https://prefix.docker.*/path", "prefix.docker.io/path"),
            ("https://*.docker.io:8888", "prefix.docker.io:8888"),
            ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
            ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
            ("http://registry.example:5000", "registry.example:5000"),
            ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
        ];
        for &(key, target) in hits {
            let image = format!("{target}/foo/bar");
            assert!(RegistryPattern::parse_auth_key(key).matches(&image), "{key} vs {image}");
        }
        let misses: &[(&str, &str)] = &[
            ("https://*.docker.com", "prefix.docker.io"),
            ("https://suffix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.c*", "prefix.docker.io"),
            ("https://prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111"),
        ];
        for &(key, target) in misses {
            let image = format!("{target}/foo/bar");
            assert!(!RegistryPattern::parse_auth_key(key).matches(&image), "{key} vs {image}");
        }
    }

    #[test]
    fn globs_behave_like_go_filepath_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("[abc", "a", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
        ];
        for &(pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} vs {text}");
        }
    }
}
