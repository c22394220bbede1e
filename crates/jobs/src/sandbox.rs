//! The data-dir sandbox: every user-supplied path is confined to one directory.
//!
//! Rules (all violations are fatal, non-retryable errors):
//! - a path is relative to the data dir; an absolute path is accepted only if it lies under the
//!   data dir (as configured or after canonicalization);
//! - `..` components, empty paths and NUL bytes are refused outright;
//! - files are opened beneath a directory handle of the data dir without following any symlink
//!   (Linux `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or
//!   component by component with `O_NOFOLLOW` where `openat2` is unavailable), so a symlink
//!   anywhere in a path is refused and no check-then-open race exists;
//! - an input must be a regular file with a single link (a hard link inside the data dir could
//!   name a file outside it);
//! - outputs are created beneath the root the same way (missing parent directories are made
//!   inside it), written to a temporary file and renamed into place within the parent directory
//!   handle, so a symlink at or above the target is never written through.

use crate::error::JobError;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
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
    /// Directory handle of the root; every job path is opened beneath it.
    fd: OwnedFd,
}

/// Identity of a file (device and inode number): the same file under any name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// An input file opened inside the data dir (see [`DataDir::open_input`]).
#[derive(Debug)]
pub struct InputFile {
    /// The open file (read-only).
    pub file: File,
    /// `<root>/<relative path>`, for messages and [`DataDir::display_relative`].
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// Its size in bytes when opened.
    pub len: u64,
}

/// Where an output file goes: its parent directory, opened beneath the root, and its name
/// (see [`DataDir::open_output`]).
#[derive(Debug)]
pub struct OutputFile {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
    existing: Option<FileId>,
}

impl OutputFile {
    /// `<root>/<relative path>`, for messages and [`DataDir::display_relative`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The regular file currently at the target, if any.
    pub fn existing(&self) -> Option<FileId> {
        self.existing
    }

    /// Write the file: `write` fills a fresh temporary file in the parent directory, which is
    /// then renamed over the target (`replace`) or linked to it only if nothing is there yet
    /// (`!replace`; an existing target then gives an [`io::ErrorKind::AlreadyExists`] I/O
    /// error). The temporary file is removed on error.
    pub fn write_atomically(
        &self,
        replace: bool,
        write: impl FnOnce(&mut io::BufWriter<&File>) -> Result<(), JobError>,
    ) -> Result<(), JobError> {
        write_in_dir(self.dir.as_fd(), &self.name, &self.path, replace, write)
    }
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
        let fd = rfs::open(
            &canonical,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        Ok(DataDir {
            inner: Arc::new(Roots {
                canonical,
                configured: lexical_clean(&configured),
                fd,
            }),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.inner.canonical
    }

    fn root_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
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
    /// under the data dir. No filesystem access; the run-time open re-checks everything.
    pub fn check(&self, user_path: &str) -> Result<(), String> {
        Self::check_syntax(user_path)?;
        self.relative(user_path).map(|_| ())
    }

    /// The path relative to the root after the lexical checks (no filesystem access), e.g. to
    /// tell whether two user paths name the same location. `None` if it is refused.
    pub fn normalize(&self, user_path: &str) -> Option<PathBuf> {
        self.check(user_path).ok()?;
        self.relative(user_path).ok()
    }

    /// Open an existing regular file inside the data dir for reading, without following any
    /// symlink. Refuses directories and special files, and files with more than one hard link.
    pub fn open_input(&self, user_path: &str) -> Result<InputFile, JobError> {
        let rel = self.relative_checked(user_path)?;
        if rel.as_os_str().is_empty() {
            return Err(not_regular_input(user_path));
        }
        // NONBLOCK: opening a FIFO must not hang (it is refused right after); it has no effect
        // on regular files.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = open_beneath(self.root_fd(), &rel, flags).map_err(|e| match e {
            Errno::NOENT => JobError::NotFound {
                path: user_path.to_string(),
                root: self.root().to_path_buf(),
            },
            Errno::NXIO | Errno::NODEV | Errno::OPNOTSUPP => not_regular_input(user_path),
            other => self.open_error(user_path, other, "opening"),
        })?;
        let st =
            Stat::of(rfs::fstat(&fd).map_err(|e| {
                JobError::io(format!("reading metadata of `{user_path}`"), e.into())
            })?);
        if st.file_type != FileType::RegularFile {
            return Err(not_regular_input(user_path));
        }
        if st.nlink > 1 {
            return Err(self.refuse(
                user_path,
                format!(
                    "the file has {} hard links; hard links are refused (one could name a file \
                     outside the data dir)",
                    st.nlink
                ),
            ));
        }
        Ok(InputFile {
            file: File::from(fd),
            path: self.root().join(&rel),
            id: st.id,
            len: st.size,
        })
    }

    /// Prepare writing a new (or replacing an existing regular) file inside the data dir: open
    /// its parent directory beneath the root without following symlinks, creating missing
    /// directories inside the root. A symlink or non-regular file at the target is refused.
    pub fn open_output(&self, user_path: &str) -> Result<OutputFile, JobError> {
        self.output(user_path, true)?
            .ok_or_else(|| JobError::Fatal(format!("cannot create the directory of `{user_path}`")))
    }

    /// The regular file an output path currently names, if any, with the checks of
    /// [`DataDir::open_output`] but without creating directories.
    pub fn existing_output(&self, user_path: &str) -> Result<Option<FileId>, JobError> {
        Ok(self.output(user_path, false)?.and_then(|o| o.existing))
    }

    fn output(&self, user_path: &str, create: bool) -> Result<Option<OutputFile>, JobError> {
        let rel = self.relative_checked(user_path)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            return Err(self.refuse(user_path, "it does not name a file".into()));
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let Some(dir) = self.open_dir(user_path, parent_rel, create)? else {
            return Ok(None);
        };
        let existing = match rfs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let st = Stat::of(st);
                if st.file_type == FileType::Symlink {
                    return Err(self.refuse(
                        user_path,
                        "the output file exists and is a symlink; refusing to write through it"
                            .into(),
                    ));
                }
                if st.file_type != FileType::RegularFile {
                    return Err(JobError::Fatal(format!(
                        "output `{user_path}` exists and is not a regular file (a directory?); \
                         choose another output path inside the data dir (JOBSCHED_DATA_DIR)"
                    )));
                }
                Some(st.id)
            }
            Err(Errno::NOENT) => None,
            Err(e) => return Err(JobError::io(format!("inspecting `{user_path}`"), e.into())),
        };
        Ok(Some(OutputFile {
            dir,
            name,
            path: self.root().join(&rel),
            existing,
        }))
    }

    /// Open `rel` (a directory path relative to the root) beneath the root, one component at a
    /// time with `O_NOFOLLOW`, creating missing components when `create`. `None`: a component
    /// is missing and `!create`.
    fn open_dir(
        &self,
        user_path: &str,
        rel: &Path,
        create: bool,
    ) -> Result<Option<OwnedFd>, JobError> {
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rfs::openat(self.root_fd(), ".", dir_flags, Mode::empty()).map_err(|e| {
            JobError::io(format!("opening the data dir for `{user_path}`"), e.into())
        })?;
        let mut shown = PathBuf::new();
        for comp in normal_components(rel).map_err(|e| self.open_error(user_path, e, "opening"))? {
            shown.push(comp);
            if create {
                match rfs::mkdirat(&dir, comp, Mode::from_bits_truncate(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(JobError::io(
                            format!("creating the directory for `{user_path}`"),
                            e.into(),
                        ));
                    }
                }
            }
            dir = match open_dir_nofollow(dir.as_fd(), comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(Errno::NOTDIR) => {
                    return Err(self.refuse(
                        user_path,
                        format!("`{}` is not a directory", slash_path(&shown)),
                    ));
                }
                Err(e) => {
                    return Err(self.open_error(user_path, e, "opening the directory of"));
                }
            };
        }
        Ok(Some(dir))
    }

    /// Resolve a path to an existing regular file inside the data dir (as
    /// [`DataDir::open_input`], which callers should use to read it). Returns
    /// `<root>/<relative path>`.
    pub fn resolve_existing(&self, user_path: &str) -> Result<PathBuf, JobError> {
        self.open_input(user_path).map(|f| f.path)
    }

    /// Resolve a path for writing (as [`DataDir::open_output`], which callers should use to
    /// write it; missing parent directories are created). Returns `<root>/<relative path>`.
    pub fn resolve_new(&self, user_path: &str) -> Result<PathBuf, JobError> {
        self.open_output(user_path).map(|o| o.path)
    }

    /// `path` relative to the root, with `/` separators, for reporting results. `path` must be
    /// inside the root (as returned by the `open_*` and `resolve_*` methods).
    pub fn display_relative(&self, path: &Path) -> String {
        slash_path(path.strip_prefix(self.root()).unwrap_or(path))
    }

    fn open_error(&self, user_path: &str, e: Errno, doing: &str) -> JobError {
        match e {
            Errno::LOOP => self.refuse(
                user_path,
                "it goes through a symlink; symlinks are not followed inside the data dir".into(),
            ),
            Errno::XDEV => self.refuse(user_path, "it resolves outside the data dir".into()),
            other => JobError::io(format!("{doing} `{user_path}`"), other.into()),
        }
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

fn not_regular_input(user_path: &str) -> JobError {
    JobError::Fatal(format!(
        "`{user_path}` is not a regular file (it is a directory or a special file); give the \
         path of a file inside the data dir (JOBSCHED_DATA_DIR)"
    ))
}

/// The fields of a `stat` this module uses, with the same types on every target.
struct Stat {
    id: FileId,
    file_type: FileType,
    nlink: u64,
    size: u64,
}

impl Stat {
    // The field types of `struct stat` differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: rfs::Stat) -> Stat {
        Stat {
            id: FileId {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
            },
            file_type: FileType::from_raw_mode(st.st_mode as rfs::RawMode),
            nlink: st.st_nlink as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
        }
    }
}

/// Drop `.` components and redundant separators (never touches `..`, which callers refuse).
fn lexical_clean(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The components of a cleaned relative path; anything but a plain name is refused (`EXDEV`).
fn normal_components(rel: &Path) -> Result<Vec<&OsStr>, Errno> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Errno::XDEV),
        })
        .collect()
}

/// Open directory `name` in `dir` without following a symlink. A symlink gives `ELOOP`.
fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(dir, name, flags, Mode::empty()).map_err(|e| {
        // Some systems report a symlink under O_DIRECTORY | O_NOFOLLOW as ENOTDIR.
        let is_link = || {
            rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| Stat::of(st).file_type == FileType::Symlink)
        };
        if e == Errno::NOTDIR && is_link() {
            Errno::LOOP
        } else {
            e
        }
    })
}

/// Open `rel` (cleaned, relative, non-empty) beneath `root` without following any symlink:
/// `openat2` where available, else [`open_beneath_walk`].
fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::ResolveFlags;
        use std::sync::atomic::{AtomicBool, Ordering};
        static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a concurrent rename in the data dir; the kernel asks to retry.
            for _ in 0..16 {
                match rfs::openat2(root, rel, flags, Mode::empty(), how) {
                    Err(Errno::AGAIN) => continue,
                    // Missing (old kernel) or blocked (seccomp) syscall: walk instead.
                    Err(Errno::NOSYS | Errno::PERM) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    other => return other,
                }
            }
        }
    }
    open_beneath_walk(root, rel, flags)
}

/// The portable fallback of [`open_beneath`]: component by component with `O_NOFOLLOW`.
fn open_beneath_walk(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let comps = normal_components(rel)?;
    let Some((last, dirs)) = comps.split_last() else {
        return Err(Errno::NOENT);
    };
    let mut dir: Option<OwnedFd> = None;
    for comp in dirs {
        let parent = dir.as_ref().map_or(root, |d| d.as_fd());
        dir = Some(open_dir_nofollow(parent, comp)?);
    }
    let parent = dir.as_ref().map_or(root, |d| d.as_fd());
    rfs::openat(parent, *last, flags | OFlags::NOFOLLOW, Mode::empty())
}

/// Write `target` (a path from [`DataDir::resolve_new`]) by writing a fresh temporary file in
/// the same directory and renaming it over the target. Never follows a symlink at `target`;
/// the temporary file is removed on error. Prefer [`OutputFile::write_atomically`], which
/// does not reopen the directory by path.
pub fn write_atomically(
    target: &Path,
    write: impl FnOnce(&mut io::BufWriter<&File>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    let dir_path = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = target.file_name() else {
        return Err(JobError::Fatal(format!(
            "`{}` does not name a file",
            target.display()
        )));
    };
    let dir = rfs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        JobError::io(
            format!("opening the directory of `{}`", target.display()),
            e.into(),
        )
    })?;
    write_in_dir(dir.as_fd(), name, target, true, write)
}

fn write_in_dir(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
    replace: bool,
    write: impl FnOnce(&mut io::BufWriter<&File>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    // Keep the temporary name within NAME_MAX however long the target's name is.
    let short: String = name.to_string_lossy().chars().take(64).collect();
    let tmp = format!(
        ".{short}.{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    );
    let shown = shown.display();
    let fd = rfs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .map_err(|e| JobError::io(format!("creating a temporary file for `{shown}`"), e.into()))?;
    let file = File::from(fd);
    let result = (|| {
        let mut w = io::BufWriter::new(&file);
        write(&mut w)?;
        w.flush()
            .map_err(|e| JobError::io(format!("writing `{shown}`"), e))?;
        drop(w);
        file.sync_all()
            .map_err(|e| JobError::io(format!("writing `{shown}`"), e))?;
        if replace {
            rfs::renameat(dir, tmp.as_str(), dir, name)
        } else {
            // link(2) never replaces: EEXIST if the target appeared meanwhile.
            rfs::linkat(dir, tmp.as_str(), dir, name, AtFlags::empty())
        }
        .map_err(|e| JobError::io(format!("renaming into `{shown}`"), e.into()))
    })();
    if result.is_err() || !replace {
        // After a successful link the temporary name is just an extra link: remove it too.
        if let Err(e) = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty())
            && result.is_ok()
        {
            tracing::warn!(error = %e, output = %shown, "could not remove a temporary file");
        }
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
        // Symlinks are never followed, even one pointing inside (it could be swapped).
        symlink(dd.root().join("in.txt"), dd.root().join("alias.txt")).unwrap();
        assert_refused(dd.resolve_existing("alias.txt"), "symlink pointing inside");
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

    /// Both ways of opening beneath the root: `openat2` (when the kernel has it) and the
    /// component walk.
    fn open_both(dd: &DataDir, rel: &str) -> [Result<OwnedFd, Errno>; 2] {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        [
            open_beneath(dd.root_fd(), Path::new(rel), flags),
            open_beneath_walk(dd.root_fd(), Path::new(rel), flags),
        ]
    }

    #[test]
    fn regular_file_opens_beneath_the_root() {
        let (_t, dd) = setup();
        fs::create_dir(dd.root().join("sub")).unwrap();
        fs::write(dd.root().join("sub/f.txt"), "deep").unwrap();
        for r in open_both(&dd, "sub/f.txt") {
            let mut s = String::new();
            io::Read::read_to_string(&mut File::from(r.unwrap()), &mut s).unwrap();
            assert_eq!(s, "deep");
        }
        #[cfg(target_os = "linux")]
        match rfs::openat2(
            dd.root_fd(),
            "in.txt",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH,
        ) {
            Err(Errno::NOSYS | Errno::PERM) => eprintln!("openat2 unavailable: only the walk ran"),
            r => drop(r.unwrap()),
        }
        let f = dd.open_input("./sub//f.txt").unwrap();
        assert_eq!(f.path, dd.root().join("sub/f.txt"));
        assert_eq!(f.len, 4);
        assert_eq!(dd.display_relative(&f.path), "sub/f.txt");
        let abs = dd.root().join("in.txt");
        let g = dd.open_input(abs.to_str().unwrap()).unwrap();
        assert_ne!(f.id, g.id);
        assert_eq!(g.id, dd.open_input("in.txt").unwrap().id);
    }

    #[test]
    fn hard_link_to_outside_file_is_refused() {
        let (tmp, dd) = setup();
        let secret = tmp.path().join("secret.txt");
        fs::write(&secret, "outside").unwrap();
        fs::hard_link(&secret, dd.root().join("hl.txt")).unwrap();
        let err = dd.open_input("hl.txt").unwrap_err();
        assert!(matches!(err, JobError::OutsideDataDir { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("hard links are refused"), "{err}");
        // Also a hard link between two names inside (the rule cannot tell them apart).
        fs::hard_link(dd.root().join("in.txt"), dd.root().join("in2.txt")).unwrap();
        assert_refused(dd.resolve_existing("in.txt"), "linked twice inside");
    }

    #[test]
    fn symlink_components_are_refused() {
        let (tmp, dd) = setup();
        fs::create_dir(dd.root().join("real")).unwrap();
        fs::write(dd.root().join("real/f.txt"), "x").unwrap();
        symlink(dd.root().join("real"), dd.root().join("dirlink")).unwrap();
        symlink("real", dd.root().join("rellink")).unwrap();
        symlink(dd.root().join("real/f.txt"), dd.root().join("filelink")).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("s.txt"), "s").unwrap();
        symlink(&outside, dd.root().join("out")).unwrap();
        for rel in [
            "dirlink/f.txt",
            "rellink/f.txt",
            "filelink",
            "out/s.txt",
            "real/../dirlink/f.txt",
        ] {
            if !rel.contains("..") {
                for r in open_both(&dd, rel) {
                    assert_eq!(r.unwrap_err(), Errno::LOOP, "{rel}");
                }
            }
            assert_refused(dd.resolve_existing(rel), rel);
        }
        // The same file through its real path is fine.
        assert!(dd.open_input("real/f.txt").is_ok());
        // Outputs: a symlinked directory anywhere above the target is refused, nothing is
        // created through it.
        for out in [
            "dirlink/o.png",
            "out/o.png",
            "out/new/o.png",
            "real/../out/o.png",
        ] {
            assert_refused(dd.resolve_new(out), out);
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(fs::read_dir(dd.root().join("real")).unwrap().count(), 1);
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let (_t, dd) = setup();
        rfs::mknodat(
            dd.root_fd(),
            "fifo",
            FileType::Fifo,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        // Opening a FIFO for reading would block without O_NONBLOCK: run it on a thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let dd2 = dd.clone();
        std::thread::spawn(move || tx.send(dd2.open_input("fifo").map(|_| ())));
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO blocked")
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn output_writes_beneath_the_root() {
        let (_t, dd) = setup();
        assert_eq!(dd.existing_output("new/dir/o.txt").unwrap(), None);
        assert!(
            !dd.root().join("new").exists(),
            "existing_output creates nothing"
        );
        let out = dd.open_output("new/dir/o.txt").unwrap();
        assert_eq!(out.existing(), None);
        let write = |replace: bool, text: &'static str| {
            out.write_atomically(replace, |w| {
                w.write_all(text.as_bytes())
                    .map_err(|e| JobError::io("w", e))
            })
        };
        let content = || fs::read_to_string(dd.root().join("new/dir/o.txt")).unwrap();
        write(false, "one").unwrap();
        assert_eq!(content(), "one");
        // No replace: refused now that it exists, content kept, no temporary file left.
        let err = write(false, "two").unwrap_err();
        assert!(
            matches!(&err, JobError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        assert_eq!(content(), "one");
        write(true, "three").unwrap();
        assert_eq!(content(), "three");
        let names: Vec<_> = fs::read_dir(dd.root().join("new/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["o.txt"]);
        let id = dd.existing_output("new/dir/o.txt").unwrap().unwrap();
        assert_eq!(dd.open_input("new/dir/o.txt").unwrap().id, id);
        // A failing writer leaves nothing behind.
        let err = dd
            .open_output("new/dir/p.txt")
            .unwrap()
            .write_atomically(true, |_| Err(JobError::Fatal("boom".into())))
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read_dir(dd.root().join("new/dir")).unwrap().count(), 1);
    }

    #[test]
    fn normalize_compares_locations() {
        let (_t, dd) = setup();
        let abs = dd.root().join("a/b.png");
        assert_eq!(
            dd.normalize("a/./b.png"),
            dd.normalize(abs.to_str().unwrap())
        );
        assert_eq!(dd.normalize("a//b.png").unwrap(), PathBuf::from("a/b.png"));
        assert_eq!(dd.normalize("../b.png"), None);
    }
}
