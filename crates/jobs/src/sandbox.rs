//! The data-dir sandbox: every user-supplied path is confined to one directory.
//!
//! Rules (all violations are fatal, non-retryable errors):
//! - a path is relative to the data dir; an absolute path is accepted only if it lies under the
//!   data dir (as configured or after canonicalization);
//! - `..` components, empty paths and NUL bytes are refused outright;
//! - a path that resolves (through symlinks) outside the data dir is refused, for reading and
//!   for the parent directory of an output;
//! - an output file that already exists as a symlink is refused.
//!
//! Outputs are meant to be written with [`write_atomically`], which writes a fresh temporary
//! file next to the target and renames it into place, so it never writes through a symlink
//! even if one appears after [`DataDir::resolve_new`] checked.

use crate::error::JobError;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The sandbox root all job paths are confined to (`JOBSCHED_DATA_DIR`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DataDir {
    inner: Arc<Roots>,
}

#[derive(Debug)]
struct Roots {
    /// Canonical root (no symlinks).
    canonical: PathBuf,
    /// The root as configured, made absolute (may differ from `canonical` when it contains a
    /// symlink, e.g. `/data` → `/mnt/volume`); absolute user paths under it are accepted too.
    configured: PathBuf,
}

impl DataDir {
    /// Open (creating it if missing) and canonicalize the data dir.
    pub fn new(root: impl AsRef<Path>) -> Result<DataDir, JobError> {
        let root = root.as_ref();
        let err = |source: io::Error| JobError::DataDir {
            path: root.to_path_buf(),
            source,
        };
        if root.as_os_str().is_empty() {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path is empty",
            )));
        }
        let configured = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(err)?.join(root)
        };
        fs::create_dir_all(&configured).map_err(err)?;
        let canonical = fs::canonicalize(&configured).map_err(err)?;
        if !fs::metadata(&canonical).map_err(err)?.is_dir() {
            return Err(err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "it is not a directory",
            )));
        }
        Ok(DataDir {
            inner: Arc::new(Roots {
                canonical,
                configured: lexical_clean(&configured),
            }),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.inner.canonical
    }

    /// Cheap, filesystem-free syntax check used at submit time: refuses empty paths, NUL bytes
    /// and `..` components. (Whether an absolute path lies under the root needs the root: see
    /// [`DataDir::check`].)
    pub fn check_syntax(user_path: &str) -> Result<(), String> {
        if user_path.trim().is_empty() {
            return Err("the path is empty".into());
        }
        if user_path.contains('\0') {
            return Err("the path contains a NUL byte".into());
        }
        if Path::new(user_path)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err("`..` components are not allowed".into());
        }
        Ok(())
    }

    /// [`DataDir::check_syntax`] plus, for absolute paths, a lexical check that the path lies
    /// under the data dir. No filesystem access; the run-time resolution re-checks everything.
    pub fn check(&self, user_path: &str) -> Result<(), String> {
        Self::check_syntax(user_path)?;
        self.relative(user_path).map(|_| ())
    }

    /// Resolve a path to an existing regular file inside the data dir, for reading. Returns the
    /// canonical path (no symlinks left).
    pub fn resolve_existing(&self, user_path: &str) -> Result<PathBuf, JobError> {
        let rel = self.relative_checked(user_path)?;
        let joined = self.root().join(&rel);
        let canonical = match fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JobError::NotFound {
                    path: user_path.to_string(),
                    root: self.root().to_path_buf(),
                });
            }
            Err(e) => return Err(JobError::io(format!("resolving `{user_path}`"), e)),
        };
        if !canonical.starts_with(self.root()) {
            return Err(self.refuse(
                user_path,
                format!(
                    "it resolves (through a symlink) to `{}`, outside the data dir",
                    canonical.display()
                ),
            ));
        }
        let meta = fs::metadata(&canonical)
            .map_err(|e| JobError::io(format!("reading metadata of `{user_path}`"), e))?;
        if !meta.is_file() {
            return Err(JobError::Fatal(format!(
                "`{user_path}` is not a regular file (it is a directory or a special file); \
                 give the path of a file inside the data dir (JOBSCHED_DATA_DIR)"
            )));
        }
        Ok(canonical)
    }

    /// Resolve a path for writing a new (or replacing an existing regular) file inside the data
    /// dir. The parent directory must resolve inside the root; missing parent directories are
    /// created (inside the root only). An existing symlink at the target is refused. Returns
    /// `<canonical parent>/<file name>`.
    pub fn resolve_new(&self, user_path: &str) -> Result<PathBuf, JobError> {
        let rel = self.relative_checked(user_path)?;
        let Some(file_name) = rel.file_name().map(|n| n.to_os_string()) else {
            return Err(self.refuse(user_path, "it does not name a file".into()));
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));

        // Find the deepest existing ancestor of the parent and make sure it resolves inside.
        let mut existing = parent_rel.to_path_buf();
        let mut missing: Vec<std::ffi::OsString> = Vec::new();
        let base = loop {
            let candidate = self.root().join(&existing);
            match fs::symlink_metadata(&candidate) {
                Ok(_) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let Some(name) = existing.file_name() else {
                        // Only the root itself is left, and it exists (checked in `new`); a
                        // concurrent removal lands here.
                        return Err(JobError::io(
                            format!("creating the directory for `{user_path}`"),
                            e,
                        ));
                    };
                    missing.push(name.to_os_string());
                    existing.pop();
                }
                Err(e) => {
                    return Err(JobError::io(format!("inspecting `{user_path}`"), e));
                }
            }
        };
        let base = self.canonical_dir_inside(user_path, &base)?;
        let mut parent = base;
        for name in missing.iter().rev() {
            parent.push(name);
        }
        fs::create_dir_all(&parent)
            .map_err(|e| JobError::io(format!("creating the directory for `{user_path}`"), e))?;
        // Re-check after creation (a symlink could have been swapped in meanwhile).
        let parent = self.canonical_dir_inside(user_path, &parent)?;

        let target = parent.join(&file_name);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => Err(self.refuse(
                user_path,
                "the output file exists and is a symlink; refusing to write through it".into(),
            )),
            Ok(m) if !m.is_file() => Err(JobError::Fatal(format!(
                "output `{user_path}` exists and is not a regular file (a directory?); choose \
                 another output path inside the data dir (JOBSCHED_DATA_DIR)"
            ))),
            Ok(_) => Ok(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(target),
            Err(e) => Err(JobError::io(format!("inspecting `{user_path}`"), e)),
        }
    }

    /// `path` relative to the root, with `/` separators, for reporting results. `path` must be
    /// inside the root (as returned by the `resolve_*` methods).
    pub fn display_relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.root()).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn canonical_dir_inside(&self, user_path: &str, dir: &Path) -> Result<PathBuf, JobError> {
        let canonical = fs::canonicalize(dir)
            .map_err(|e| JobError::io(format!("resolving the directory of `{user_path}`"), e))?;
        if !canonical.starts_with(self.root()) {
            return Err(self.refuse(
                user_path,
                format!(
                    "its directory resolves (through a symlink) to `{}`, outside the data dir",
                    canonical.display()
                ),
            ));
        }
        if !canonical.is_dir() {
            return Err(self.refuse(
                user_path,
                format!("`{}` is not a directory", self.display_relative(&canonical)),
            ));
        }
        Ok(canonical)
    }

    fn relative_checked(&self, user_path: &str) -> Result<PathBuf, JobError> {
        Self::check_syntax(user_path)
            .and_then(|()| self.relative(user_path))
            .map_err(|reason| self.refuse(user_path, reason))
    }

    /// The user path relative to the root (lexically, no filesystem access).
    fn relative(&self, user_path: &str) -> Result<PathBuf, String> {
        let p = Path::new(user_path);
        let rel = if p.is_absolute() {
            let clean = lexical_clean(p);
            let under = clean
                .strip_prefix(&self.inner.canonical)
                .or_else(|_| clean.strip_prefix(&self.inner.configured));
            match under {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => return Err("it is an absolute path outside the data dir".into()),
            }
        } else {
            lexical_clean(p)
        };
        Ok(rel)
    }

    fn refuse(&self, user_path: &str, reason: String) -> JobError {
        JobError::OutsideDataDir {
            path: user_path.to_string(),
            root: self.root().to_path_buf(),
            reason,
        }
    }
}

/// Drop `.` components and redundant separators (never touches `..`, which callers refuse).
fn lexical_clean(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Write `target` (a path from [`DataDir::resolve_new`]) by writing a fresh temporary file in
/// the same directory and renaming it over the target. Never follows a symlink at `target`;
/// the temporary file is removed on error.
pub fn write_atomically(
    target: &Path,
    write: impl FnOnce(&mut io::BufWriter<&fs::File>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| JobError::io(format!("creating `{}`", tmp.display()), e))?;
    let result = (|| {
        let mut w = io::BufWriter::new(&file);
        write(&mut w)?;
        w.flush()
            .map_err(|e| JobError::io(format!("writing `{}`", target.display()), e))?;
        drop(w);
        file.sync_all()
            .map_err(|e| JobError::io(format!("writing `{}`", target.display()), e))?;
        fs::rename(&tmp, target)
            .map_err(|e| JobError::io(format!("renaming into `{}`", target.display()), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::new(tmp.path().join("data")).unwrap();
        fs::write(dd.root().join("in.txt"), "hello").unwrap();
        (tmp, dd)
    }

    fn assert_refused(r: Result<PathBuf, JobError>, what: &str) {
        let err = r.expect_err(what);
        assert!(!err.is_retryable(), "{what}: {err}");
        assert!(
            matches!(err, JobError::OutsideDataDir { .. }),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("JOBSCHED_DATA_DIR"), "{what}: {msg}");
    }

    #[test]
    fn new_creates_and_canonicalizes() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::new(tmp.path().join("a/./b")).unwrap();
        assert!(dd.root().is_dir());
        assert_eq!(dd.root(), fs::canonicalize(tmp.path().join("a/b")).unwrap());
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = DataDir::new(&file).unwrap_err();
        assert!(err.to_string().contains("JOBSCHED_DATA_DIR"), "{err}");
        assert!(DataDir::new("").is_err());
    }

    #[test]
    fn relative_and_absolute_inside_are_accepted() {
        let (_t, dd) = setup();
        let expected = dd.root().join("in.txt");
        assert_eq!(dd.resolve_existing("in.txt").unwrap(), expected);
        assert_eq!(dd.resolve_existing("./in.txt").unwrap(), expected);
        let abs = dd.root().join("in.txt");
        assert_eq!(
            dd.resolve_existing(abs.to_str().unwrap()).unwrap(),
            expected
        );
        assert!(dd.check(abs.to_str().unwrap()).is_ok());
        // A symlink inside pointing inside is fine for reading.
        symlink(dd.root().join("in.txt"), dd.root().join("alias.txt")).unwrap();
        assert_eq!(dd.resolve_existing("alias.txt").unwrap(), expected);
    }

    #[test]
    fn configured_root_through_symlink_accepts_absolute_paths_under_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let dd = DataDir::new(tmp.path().join("link")).unwrap();
        fs::write(dd.root().join("x.txt"), "x").unwrap();
        let via_link = tmp.path().join("link/x.txt");
        assert_eq!(
            dd.resolve_existing(via_link.to_str().unwrap()).unwrap(),
            dd.root().join("x.txt")
        );
    }

    #[test]
    fn escapes_are_refused_as_fatal() {
        let (tmp, dd) = setup();
        // Absolute path outside.
        assert_refused(dd.resolve_existing("/etc/passwd"), "absolute outside");
        assert!(dd.check("/etc/passwd").is_err());
        // A sibling whose name shares the root's prefix is still outside.
        let sibling = format!("{}-evil/x", dd.root().display());
        assert_refused(dd.resolve_existing(&sibling), "prefix sibling");
        // `..` escapes, even ones that would land back inside.
        assert_refused(dd.resolve_existing("../etc/passwd"), "dotdot");
        assert_refused(dd.resolve_existing("sub/../in.txt"), "inner dotdot");
        let abs_dotdot = format!("{}/../data/in.txt", dd.root().display());
        assert_refused(dd.resolve_existing(&abs_dotdot), "absolute dotdot");
        // NUL and empty.
        assert_refused(dd.resolve_existing("in\0.txt"), "nul");
        assert_refused(dd.resolve_existing(""), "empty");
        assert_refused(dd.resolve_new("a\0b.png"), "nul output");
        // Symlink inside pointing to /etc/passwd.
        symlink("/etc/passwd", dd.root().join("passwd")).unwrap();
        assert_refused(dd.resolve_existing("passwd"), "file symlink escape");
        // Symlinked directory escaping.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret.txt"), "s").unwrap();
        symlink(&outside, dd.root().join("escape")).unwrap();
        assert_refused(
            dd.resolve_existing("escape/secret.txt"),
            "dir symlink escape",
        );
        // Outputs escaping: via `..`, absolute, symlinked dir (existing and deeper missing).
        assert_refused(dd.resolve_new("../out.png"), "output dotdot");
        let abs_out = outside.join("o.png");
        assert_refused(dd.resolve_new(abs_out.to_str().unwrap()), "output absolute");
        assert_refused(dd.resolve_new("escape/o.png"), "output through dir symlink");
        assert_refused(dd.resolve_new("escape/new/deeper/o.png"), "output deep");
        assert!(
            !outside.join("new").exists(),
            "no directory may be created outside the data dir"
        );
        // Existing symlink output file (even one pointing inside).
        symlink(outside.join("secret.txt"), dd.root().join("link.png")).unwrap();
        assert_refused(dd.resolve_new("link.png"), "output symlink file");
        symlink(dd.root().join("in.txt"), dd.root().join("inner.png")).unwrap();
        assert_refused(dd.resolve_new("inner.png"), "output symlink file inside");
        assert_eq!(fs::read_to_string(outside.join("secret.txt")).unwrap(), "s");
    }

    #[test]
    fn missing_input_is_fatal_not_found() {
        let (_t, dd) = setup();
        let err = dd.resolve_existing("nope.txt").unwrap_err();
        assert!(matches!(err, JobError::NotFound { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("nope.txt"));
        fs::create_dir(dd.root().join("dir")).unwrap();
        let err = dd.resolve_existing("dir").unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn resolve_new_creates_parents_inside() {
        let (_t, dd) = setup();
        let p = dd.resolve_new("thumbs/a/b/out.png").unwrap();
        assert_eq!(p, dd.root().join("thumbs/a/b/out.png"));
        assert!(dd.root().join("thumbs/a/b").is_dir());
        assert_eq!(dd.display_relative(&p), "thumbs/a/b/out.png");
        assert!(dd.resolve_new(".").is_err());
        // Parent is a file.
        let err = dd.resolve_new("in.txt/x.png").unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        // Writing replaces an existing regular file atomically.
        write_atomically(&p, |w| {
            w.write_all(b"one").map_err(|e| JobError::io("w", e))
        })
        .unwrap();
        write_atomically(&p, |w| {
            w.write_all(b"two").map_err(|e| JobError::io("w", e))
        })
        .unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn check_syntax_cases() {
        assert!(DataDir::check_syntax("a/b.txt").is_ok());
        assert!(DataDir::check_syntax("/data/x").is_ok());
        assert!(DataDir::check_syntax("").is_err());
        assert!(DataDir::check_syntax("  ").is_err());
        assert!(DataDir::check_syntax("a\0").is_err());
        assert!(DataDir::check_syntax("a/../b").is_err());
        assert!(DataDir::check_syntax("..").is_err());
    }
}
