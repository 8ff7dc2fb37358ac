//! `scripts/setup.sh` decides what to install by asking for the exact
//! packages and commands the build uses. These tests run its detection
//! (`--print-missing`, which changes nothing) in a fake world: a PATH that
//! holds only a fake `dpkg-query` and the stub commands each case wants, and
//! a fake root for the file probes (`PETUUM_SETUP_ROOT`).
//!
//! The first case is the machine of the bug report: Debian 12 with
//! `libclang-cpp14` (`/usr/lib/llvm-14/lib/libclang-cpp.so.14`) but not
//! `libclang-dev`, where the old glob `libclang*.so*` matched the wrong
//! library and bindgen failed twenty minutes into the first build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct World {
    dir: tempfile::TempDir,
}

impl World {
    /// A world where dpkg knows exactly `installed` and PATH holds exactly
    /// `commands` (each a stub that succeeds).
    fn new(installed: &[&str], commands: &[&str]) -> World {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(w.bin()).unwrap();
        std::fs::create_dir_all(w.root()).unwrap();
        std::fs::create_dir_all(w.path("home")).unwrap();
        // What the script itself runs before it decides.
        for tool in ["dirname", "mkdir"] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("no {tool} in /usr/bin or /bin"));
            std::os::unix::fs::symlink(real, w.bin().join(tool)).unwrap();
        }
        // dpkg-query -W -f='${Status}' PKG, as dpkg answers it.
        let mut dpkg = String::from("#!/bin/bash\npkg=\"${@: -1}\"\ncase \"$pkg\" in\n");
        for p in installed {
            dpkg.push_str(&format!("  {p}) printf 'install ok installed'; exit 0;;\n"));
        }
        dpkg.push_str(
            "  *) echo \"dpkg-query: no packages found matching $pkg\" >&2; exit 1;;\nesac\n",
        );
        w.script("dpkg-query", &dpkg);
        for c in commands {
            w.script(c, "#!/bin/bash\nexit 0\n");
        }
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn bin(&self) -> PathBuf {
        self.path("bin")
    }
    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.bin().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A file under the fake root (e.g. a library).
    fn file(&self, rel: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    /// The packages setup.sh would install here.
    fn missing(&self) -> Vec<String> {
        self.missing_with(&[])
    }

    /// `setup.sh --print-missing EXTRA...`.
    fn missing_with(&self, extra: &[&str]) -> Vec<String> {
        let script = petuum_tests::manifest_dir().join("../scripts/setup.sh");
        let out = Command::new("/bin/bash")
            .arg(&script)
            .arg("--print-missing")
            .args(extra)
            .env_clear()
            .env("PATH", self.bin())
            .env("HOME", self.path("home"))
            .env("PETUUM_SETUP_ROOT", self.root())
            .output()
            .expect("run setup.sh");
        assert!(
            out.status.success(),
            "setup.sh --print-missing failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// Everything a complete machine has on PATH.
const COMMANDS: &[&str] = &["cargo", "curl", "python3", "npm"];

#[test]
fn libclang_cpp_alone_asks_for_libclang_dev() {
    // The bug report's machine: compilers and libclang-cpp14, no libclang-dev.
    let w = World::new(
        &["build-essential", "pkg-config", "libclang-cpp14"],
        COMMANDS,
    );
    w.file("usr/lib/llvm-14/lib/libclang-cpp.so.14");
    w.file("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    assert_eq!(w.missing(), ["libclang-dev"]);
}

#[test]
fn complete_machine_installs_nothing() {
    let w = World::new(&["build-essential", "pkg-config", "libclang-dev"], COMMANDS);
    assert_eq!(w.missing(), Vec::<String>::new());
}

#[test]
fn removed_package_with_config_files_counts_as_missing() {
    // `apt-get remove` leaves "deinstall ok config-files": not installed.
    let w = World::new(&["pkg-config", "libclang-dev"], COMMANDS);
    w.script(
        "dpkg-query",
        "#!/bin/bash\npkg=\"${@: -1}\"\ncase \"$pkg\" in\n  build-essential) printf 'deinstall ok config-files';;\n  pkg-config|libclang-dev) printf 'install ok installed';;\n  *) exit 1;;\nesac\n",
    );
    assert_eq!(w.missing(), ["build-essential"]);
}

#[test]
fn an_llvm_with_the_exact_libclang_so_is_enough() {
    // LLVM from another source: no libclang-dev package, but the exact
    // libclang.so that clang-sys loads.
    let w = World::new(&["build-essential", "pkgconf"], COMMANDS);
    w.file("usr/lib/llvm-17/lib/libclang.so");
    assert_eq!(w.missing(), Vec::<String>::new());
}

#[test]
fn fresh_debian_without_rust_python_or_npm() {
    // Nothing but dpkg: every package, curl for rustup, python3 with pip.
    let w = World::new(&[], &[]);
    assert_eq!(
        w.missing(),
        [
            "build-essential",
            "pkg-config",
            "libclang-dev",
            "curl",
            "python3",
            "python3-pip",
            "npm"
        ]
    );
}

#[test]
fn python_without_pip_asks_for_pip_only() {
    let w = World::new(&["build-essential", "pkg-config", "libclang-dev"], COMMANDS);
    // A python3 whose `-m pip` fails.
    w.script(
        "python3",
        "#!/bin/bash\n[[ \"$1 $2\" == \"-m pip\" ]] && exit 1\nexit 0\n",
    );
    assert_eq!(w.missing(), ["python3-pip"]);
}

#[test]
fn the_test_suite_also_asks_for_prometheus_and_chromium() {
    let w = World::new(&["build-essential", "pkg-config", "libclang-dev"], COMMANDS);
    assert_eq!(w.missing(), Vec::<String>::new());
    assert_eq!(w.missing_with(&["--test"]), ["prometheus", "chromium"]);
    w.script("chromium", "#!/bin/bash\nexit 0\n");
    assert_eq!(w.missing_with(&["--test"]), ["prometheus"]);
}
