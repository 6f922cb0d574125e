//! No code: this package holds the metadata of the `.deb` and `.rpm`
//! packages of the release (`[package.metadata.deb]` and
//! `[package.metadata.generate-rpm]` in its manifest), which
//! `scripts/build-packages` makes from the static binaries in `dist/`, and
//! the systemd units they install.
