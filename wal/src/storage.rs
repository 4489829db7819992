//! The file-system seam: every byte the WAL reads or writes goes through
//! [`Storage`] and [`SegmentFile`]. [`FsStorage`] is the real thing;
//! [`crate::fault::FaultyStorage`] injects short writes, failed syncs and
//! ENOSPC so tests can prove the WAL never reports a failed sync as durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// An open segment file, positioned for appending.
pub trait SegmentFile: Send {
    /// Appends all of `bytes` at the end of the file, or fails. On failure
    /// any prefix of `bytes` may have reached the file.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Directory and file operations the WAL needs.
pub trait Storage: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates (or truncates) a file and opens it for appending.
    fn create_file(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Cuts a file to `file_bytes` and makes the new length durable.
    fn truncate_file(&self, path: &Path, file_bytes: u64) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system (std::fs).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsSegmentFile {
    file: File,
}

impl SegmentFile for FsSegmentFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // Names that are not UTF-8 cannot be ours; skip them.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        Ok(Box::new(FsSegmentFile { file }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        // O_APPEND: every write lands at the current end of the file.
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(FsSegmentFile { file }))
    }

    fn truncate_file(&self, path: &Path, file_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(file_bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
