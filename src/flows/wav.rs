//! WAV files sipgate can play: PCM signed 16-bit, mono, 8 kHz (a file in
//! another format is silently not played, so it is refused up front).

/// What a WAV file's `fmt ` chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// 1 = PCM; 0xFFFE (extensible) carries the real format in its sub-format.
    pub format_tag: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
}

impl Format {
    fn is_pcm(&self) -> bool {
        self.format_tag == 1
    }

    fn describe(&self) -> String {
        let rate = if self.sample_rate.is_multiple_of(1000) {
            format!("{} kHz", self.sample_rate / 1000)
        } else {
            format!("{:.1} kHz", f64::from(self.sample_rate) / 1000.0)
        };
        let channels = match self.channels {
            1 => "mono".to_string(),
            2 => "stereo".to_string(),
            n => format!("{n} channels"),
        };
        let codec = if self.is_pcm() {
            format!("{}-bit PCM", self.bits_per_sample)
        } else {
            format!("format {:#06x} (not PCM)", self.format_tag)
        };
        format!("{rate} {channels} {codec}")
    }
}

/// Reads the format of `bytes`; an error says what the file is instead.
pub fn format(bytes: &[u8]) -> Result<Format, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let mut at = 12;
    let mut found = None;
    let mut has_data = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = at + 8;
        match id {
            b"fmt " => {
                let chunk = bytes
                    .get(body..body + 16)
                    .ok_or("a WAV file with a truncated fmt chunk")?;
                let u16_at = |i: usize| u16::from_le_bytes([chunk[i], chunk[i + 1]]);
                let mut format_tag = u16_at(0);
                if format_tag == 0xFFFE {
                    // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag.
                    if let Some(sub) = bytes.get(body + 24..body + 26) {
                        format_tag = u16::from_le_bytes([sub[0], sub[1]]);
                    }
                }
                found = Some(Format {
                    format_tag,
                    channels: u16_at(2),
                    sample_rate: u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
                    bits_per_sample: u16_at(14),
                });
            }
            b"data" => has_data = true,
            _ => {}
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    let format = found.ok_or("a WAV file without a fmt chunk")?;
    if !has_data {
        return Err("a WAV file without audio (no data chunk)".into());
    }
    Ok(format)
}

/// `Ok` when sipgate plays `bytes`; otherwise what the file is, e.g.
/// "44.1 kHz stereo 16-bit PCM".
pub fn check_playable(bytes: &[u8]) -> Result<(), String> {
    let format = format(bytes)?;
    if format.is_pcm()
        && format.channels == 1
        && format.sample_rate == 8000
        && format.bits_per_sample == 16
    {
        Ok(())
    } else {
        Err(format.describe())
    }
}

/// A WAV file of `samples` samples of silence in `channels` × `rate` Hz at
/// `bits` per sample: for tests and examples.
pub fn synthesize(rate: u32, channels: u16, bits: u16, samples: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let data_len = samples * u32::from(block);
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(44 + data_len as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_khz_mono_16_bit_pcm_plays_and_the_rest_is_named() {
        assert_eq!(check_playable(&synthesize(8000, 1, 16, 800)), Ok(()));
        assert_eq!(
            check_playable(&synthesize(44100, 2, 16, 10)).unwrap_err(),
            "44.1 kHz stereo 16-bit PCM"
        );
        assert_eq!(
            check_playable(&synthesize(8000, 1, 8, 10)).unwrap_err(),
            "8 kHz mono 8-bit PCM"
        );
        assert_eq!(
            check_playable(&synthesize(16000, 1, 16, 10)).unwrap_err(),
            "16 kHz mono 16-bit PCM"
        );
        assert!(
            check_playable(b"ID3\x04mp3 data")
                .unwrap_err()
                .contains("not a WAV")
        );
        let mut no_data = synthesize(8000, 1, 16, 0);
        no_data.truncate(36);
        assert!(
            check_playable(&no_data)
                .unwrap_err()
                .contains("no data chunk")
        );
        assert!(check_playable(&synthesize(8000, 1, 16, 0)[..20]).is_err());
    }
}
