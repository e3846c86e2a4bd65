//! Filesystem backend.
//!
//! Layout under the root directory:
//! ```text
//! blobs/<algorithm>/<first two hex digits>/<hex>   committed blobs, immutable
//! uploads/<upload id>                              data of open upload sessions
//! ```
//! Both trees live on one filesystem, so committing is an atomic rename of a
//! fully written and fsynced file; a crash leaves either the upload file or
//! the complete blob, never a partial blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use futures_util::StreamExt;

use crate::stream::file_stream;
use crate::write_queue::write_queue;
use crate::{BlobBody, BlobError, BlobRead, BlobStore, ByteRange, ByteStream, Result, StoredBlob, UploadCursor};

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(blob_relative_path(digest))
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        // Ids are generated UUIDs; refuse anything that could escape the directory.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(BlobError::UploadLost);
        }
        Ok(self.root.join("uploads").join(id))
    }
}

/// Where a committed blob lives under the store's root:
/// `blobs/<algorithm>/<first two hex digits>/<hex>` (also the layout of a
/// `berth backup` directory).
pub fn blob_relative_path(digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    Path::new("blobs").join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
}

/// Where [`BlobStore::quarantine`] puts a damaged blob, relative to the
/// root: `quarantine/<algorithm>/<hex>.<ms>` (a blob damaged twice keeps
/// both copies).
pub fn quarantine_relative_path(digest: &Digest, now_ms: i64) -> PathBuf {
    Path::new("quarantine").join(digest.algorithm().as_str()).join(format!("{}.{now_ms}", digest.hex()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Backend(format!("blocking task failed: {e}")))?
        .map_err(BlobError::Io)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, and each directory it made is recorded durably in its
/// parent: a blob renamed into a fresh prefix directory must not vanish with
/// that directory's entry after a power loss. Costs nothing once the
/// directory exists.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn modified_ms(meta: &fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn backend(&self) -> &'static str {
        "filesystem"
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = self.root.join("uploads").join(".readyz");
        blocking(move || {
            fs::write(&probe, b"ok")?;
            fs::remove_file(&probe)
        })
        .await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        let path = self.blob_path(digest);
        let (file, size) = match blocking(move || {
            let f = File::open(path)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        {
            Ok(v) => v,
            Err(BlobError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(e),
        };
        let (start, len) = match range {
            Some(r) if r.end < size => (r.start, r.len()),
            Some(_) => return Err(BlobError::Backend("range beyond blob size".into())),
            None => (0, size),
        };
        Ok(BlobRead { len, body: BlobBody::Stream(file_stream(file, start, len)) })
    }

    async fn read_stream(&self, digest: &Digest) -> Result<(u64, ByteStream)> {
        let read = self.read(digest, None).await?;
        match read.body {
            BlobBody::Stream(stream) => Ok((read.len, stream)),
            BlobBody::Redirect(_) => Err(BlobError::Backend("the filesystem store never redirects".into())),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>> {
        let from = self.blob_path(digest);
        let relative = quarantine_relative_path(digest, crate::now_ms());
        let to = self.root.join(&relative);
        blocking(move || {
            let dir = to.parent().expect("quarantine path has a parent");
            create_dir_durably(dir)?;
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            sync_dir(dir)?;
            sync_dir(from.parent().expect("blob path has a parent"))?;
            Ok(Some(relative.to_string_lossy().into_owned()))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<StoredBlob>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let alg_dir = root.join(alg.as_str());
                let Ok(prefixes) = fs::read_dir(&alg_dir) else { continue };
                for prefix in prefixes {
                    for entry in fs::read_dir(prefix?.path())? {
                        let entry = entry?;
                        let name = entry.file_name();
                        let Ok(digest) = Digest::parse(&format!("{}:{}", alg.as_str(), name.to_string_lossy())) else {
                            continue;
                        };
                        let meta = entry.metadata()?;
                        out.push(StoredBlob { digest, size: meta.len(), modified_ms: modified_ms(&meta) });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn upload_start(&self, id: &str) -> Result<UploadCursor> {
        // The data file is created by the first append; an empty session needs no I/O.
        self.upload_path(id)?;
        Ok(UploadCursor::default())
    }

    async fn upload_append(
        &self,
        id: &str,
        cursor: &UploadCursor,
        mut data: ByteStream,
        hasher: Option<Hasher>,
    ) -> Result<(UploadCursor, Option<Hasher>)> {
        let path = self.upload_path(id)?;
        let offset = cursor.offset;
        let (tx, mut rx) = write_queue();
        // Hash and write on a blocking thread while this task keeps reading
        // the socket, so network, hashing and disk overlap.
        let writer = tokio::task::spawn_blocking(move || -> Result<(u64, Option<Hasher>)> {
            let mut hasher = hasher;
            let mut file = open_for_append(&path, offset)?;
            let mut writeback = EarlyWriteback::new(offset);
            let mut written = 0u64;
            while let Some(queued) = rx.blocking_recv() {
                let chunk = &queued.chunk;
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(chunk);
                }
                file.write_all(chunk)?;
                written += chunk.len() as u64;
                writeback.wrote(&file, chunk.len() as u64);
            }
            file.sync_data()?;
            Ok((written, hasher))
        });
        let mut source_error = None;
        while let Some(item) = data.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    source_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| BlobError::Backend(format!("writer task failed: {e}")))?;
        if source_error.is_some() || written.is_err() {
            // Give back the space of a failed append at once (a full disk
            // must not stay full); the next append would discard it anyway.
            let path = self.upload_path(id)?;
            let _ = blocking(move || OpenOptions::new().write(true).open(&path)?.set_len(offset)).await;
        }
        if let Some(e) = source_error {
            return Err(BlobError::Source(e));
        }
        let (written, hasher) = written?;
        Ok((UploadCursor { offset: offset + written, state: String::new() }, hasher))
    }

    async fn upload_read(&self, id: &str, cursor: &UploadCursor) -> Result<ByteStream> {
        let path = self.upload_path(id)?;
        let len = cursor.offset;
        let file = blocking(move || {
            let f = File::open(&path)?;
            if f.metadata()?.len() < len {
                return Err(io::Error::new(io::ErrorKind::NotFound, "upload shorter than recorded"));
            }
            Ok(f)
        })
        .await;
        match file {
            Ok(f) => Ok(file_stream(f, 0, len)),
            Err(BlobError::Io(e)) if e.kind() == io::ErrorKind::NotFound && len == 0 => {
                Ok(Box::pin(futures_util::stream::empty()))
            }
            Err(BlobError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::UploadLost),
            Err(e) => Err(e),
        }
    }

    async fn upload_commit(&self, id: &str, cursor: &UploadCursor, digest: &Digest) -> Result<()> {
        let upload = self.upload_path(id)?;
        let target = self.blob_path(digest);
        let len = cursor.offset;
        blocking(move || {
            if target.exists() {
                // Content-addressed: the existing blob has the same bytes. This
                // also makes a retried commit succeed after a crash.
                return match fs::remove_file(&upload) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            // An empty upload may never have created its file.
            match fs::metadata(&upload) {
                Ok(m) if m.len() == len => {}
                Ok(m) if m.len() > len => OpenOptions::new().write(true).open(&upload)?.set_len(len)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound && len == 0 => {
                    File::create(&upload)?.sync_all()?;
                }
                Ok(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upload shorter than recorded")),
                Err(e) => return Err(e),
            }
            let dir = target.parent().expect("blob path has a parent");
            create_dir_durably(dir)?;
            fs::rename(&upload, &target)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| match e {
            BlobError::Io(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof) => {
                BlobError::UploadLost
            }
            e => e,
        })
    }

    async fn upload_abort(&self, id: &str, _cursor: &UploadCursor) -> Result<()> {
        let path = self.upload_path(id)?;
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list_uploads(&self, before_ms: i64) -> Result<Vec<String>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if modified_ms(&entry.metadata()?) < before_ms {
                    out.push(name);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Opens an upload's data file positioned at `offset`, dropping any bytes a
/// failed earlier append left beyond it.
/// Starts writeback of an upload's data while it is still arriving, so the
/// `fdatasync` that makes a chunk durable finds little left to write. Without
/// it a 16 MiB PATCH sits in the page cache (below the kernel's background
/// writeback threshold) until the final sync, which then waits for all of it:
/// receiving and writing to disk would not overlap.
struct EarlyWriteback {
    /// Start of the range not yet handed to writeback.
    from: u64,
    pending: u64,
}

/// Hand data to writeback in steps of this size.
const WRITEBACK_STEP: u64 = 2 * 1024 * 1024;

impl EarlyWriteback {
    fn new(offset: u64) -> Self {
        EarlyWriteback { from: offset, pending: 0 }
    }

    fn wrote(&mut self, file: &File, len: u64) {
        self.pending += len;
        if self.pending >= WRITEBACK_STEP {
            start_writeback(file, self.from, self.pending);
            self.from += self.pending;
            self.pending = 0;
        }
    }
}

/// Asks the kernel to start writing a range out, without waiting. Advisory:
/// durability still comes from `sync_data`, so failure here is ignored.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else { return };
    // SAFETY: a valid open descriptor and plain integer arguments.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _len: u64) {}

fn open_for_append(path: &Path, offset: u64) -> Result<File> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && offset == 0 => {
            OpenOptions::new().write(true).create(true).truncate(true).open(path)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::UploadLost),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < offset {
        return Err(BlobError::UploadLost);
    }
    if len > offset {
        file.set_len(offset)?;
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}
