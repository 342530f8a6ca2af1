//! Reading the files tallyd is given: its config file, the mapping file, the web config and
//! the certificates it names. Each is read up to [`MAX_FILE_BYTES`]: a wrong path (a log
//! file, `/dev/zero`) fails at once, named, instead of filling memory.

use std::io::{self, Read};
use std::path::Path;

/// The largest file tallyd reads: 16 MiB, some 150,000 mapping rules.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The file's bytes, if it holds at most [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    Ok(bytes)
}

/// The file's text, if it holds at most [`MAX_FILE_BYTES`] of UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
