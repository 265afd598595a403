//! A small file system of its own (tmpfs, needs root) and a way to fill it.

use std::process::Command as StdCommand;

/// A tmpfs mounted on a directory, unmounted when dropped.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    pub fn mount(dir: &std::path::Path, size: &str) -> Result<SmallDisk, String> {
        let out = StdCommand::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` until it reports no space left.
pub fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&block).and_then(|_| file.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => {
                // ENOSPC: write what fits in the last block too.
                let mut rest = 4096;
                while rest > 0 {
                    match file.write_all(&block[..rest]) {
                        Ok(()) => {}
                        Err(_) => rest /= 2,
                    }
                }
                return;
            }
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}
