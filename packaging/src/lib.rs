//! No code: this package holds what the release's `.deb` and `.rpm` are
//! made from (`[package.metadata.deb]` in its manifest for cargo-deb,
//! `kubelet-credential-providers.spec` for rpmbuild, the description they
//! share, and the systemd service they install), which
//! `scripts/build-packages` packs around the static binaries in `dist/`.
