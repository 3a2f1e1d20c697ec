//! Where things are: the repository, the workspace binaries, the fixtures, the python3 that
//! runs them, and temporary folders. Not what runs there (process.rs) nor what is written there
//! (config.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Path of a workspace binary, built by `cargo build --workspace` (the test command does that).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, the binaries (and the bench) one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("target dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (scripts/test.sh does this)",
        path.display()
    );
    path
}

/// A file in tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The real python3 interpreter (resolved once through `python3` on PATH, so that a version
/// manager's shim is not what the relay starts for every session).
pub fn python3() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 is needed for the test fixture tools");
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                out.status.success() && !path.is_empty(),
                "python3 did not say where it is: {out:?}"
            );
            PathBuf::from(path)
        })
        .clone()
}

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder under the system temp dir.
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mcp-bridge-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
