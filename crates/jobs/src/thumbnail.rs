//! `thumbnail`: shrink a JPEG or PNG image to fit a box, preserving its aspect ratio.
//!
//! Payload: `{"input_path", "width": 1..=4096, "height": 1..=4096, "output_path"?,
//! "overwrite"?: bool}`.
//!
//! - The image is scaled down to the largest size that fits inside `width`×`height` with the
//!   same aspect ratio (each side rounded to the nearest pixel, at least 1). It is **never
//!   upscaled**: an image that already fits keeps its size (as Pillow's `thumbnail()`). EXIF
//!   orientation is applied first.
//! - The output goes to `output_path` (inside the data dir; its extension `.jpg`, `.jpeg` or
//!   `.png` picks the format) or by default to `thumbnails/<stem>_<width>x<height>.<ext>`, where
//!   `<width>x<height>` is the requested box and the format is the input's. An existing
//!   `output_path` is replaced only with `"overwrite": true` (the default output is always
//!   replaced); the input itself is never a valid output.
//! - Result: `{"output_path": path relative to the data dir, "width", "height"` (the ACTUAL
//!   output size)`, "original_width", "original_height"}`.
//!
//! Memory: decompression bombs are refused from the header, before any pixel is decoded (sides
//! over [`ImageLimits::max_dimension`], decoded size over [`ImageLimits::max_alloc`]). Then the
//! run reserves its worst-case working memory (compressed JPEG input, decoder buffers, decoded
//! image, rotation copy, resized image, encoder buffers) from a process-wide decode budget
//! ([`set_decode_budget`], `JOBSCHED_DECODE_BUDGET`, default 192 MiB) and waits while other
//! runs hold it. An image needing more than the whole budget fails at once. The decoders get
//! [`image::Limits`] too: the maximum sides, and [`DECODER_ALLOC`] for their own allocations.
//!
//! Stopping: the stop flag is checked while waiting for budget, on every read of the input
//! (a PNG decode aborts mid-stream; a JPEG is read whole before its decode, which is CPU
//! only) and between the decode, resize and encode steps; a stopped run fails with
//! [`JobError::Stopped`].
//!
//! All input problems (missing file, not an image, too large, sandbox violations) are fatal.

pub use crate::decode_budget::{DECODE_BUDGET_ENV, DEFAULT_DECODE_BUDGET};
use crate::decode_budget::{DecodeBudget, GLOBAL, Refusal};
use crate::payload::{self, field, get, invalid, kind};
use crate::sandbox::FileId;
use crate::sdk::{Ctx, Handler, into_result, run_blocking};
use crate::{DataDir, FieldError, JobContext, JobError, RunOutput};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{
    ColorType, DynamicImage, GenericImageView, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits, metadata::Orientation,
};
use serde_json::{Value, json};
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest accepted `width` / `height` of the box.
pub const MAX_BOX: u32 = 4096;
/// JPEG output quality.
pub const JPEG_QUALITY: u8 = 90;
/// Run time limit when the job sets no `timeout_seconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Cap on a decoder's own allocations (PNG metadata chunks and row buffers), given to it as
/// [`image::Limits::max_alloc`]; counted in every reservation.
pub const DECODER_ALLOC: u64 = 4 * 1024 * 1024;
/// The header is parsed from a prefix of the file this long, growing ×16 up to
/// [`HEADER_PREFIX_MAX`] if the header does not fit.
const HEADER_PREFIX_START: u64 = 64 * 1024;
/// Longest header (everything before the image data) accepted.
const HEADER_PREFIX_MAX: u64 = 16 * 1024 * 1024;
/// Buffers not worth itemizing (readers, writers, tables).
const SLACK: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Set the process-wide decode budget in bytes (`JOBSCHED_DECODE_BUDGET`; default
/// [`DEFAULT_DECODE_BUDGET`]). Runs waiting for budget re-check against the new value; 0 makes
/// every thumbnail fail.
pub fn set_decode_budget(bytes: u64) {
    GLOBAL.set_capacity(bytes);
}

/// The process-wide decode budget in bytes.
pub fn decode_budget() -> u64 {
    GLOBAL.capacity()
}

/// Bytes of the process-wide decode budget reserved right now.
pub fn decode_budget_in_use() -> u64 {
    GLOBAL.in_use()
}

/// Most bytes of the process-wide budget reserved at once since start or the last
/// [`reset_decode_budget_peak`].
pub fn decode_budget_peak() -> u64 {
    GLOBAL.peak()
}

/// Restart [`decode_budget_peak`] from the current reservation.
pub fn reset_decode_budget_peak() {
    GLOBAL.reset_peak();
}

/// Runs waiting for the process-wide decode budget right now.
pub fn decode_budget_waiting() -> usize {
    GLOBAL.waiting()
}

/// Decompression-bomb guards applied to every input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted input width and height, in pixels.
    pub max_dimension: u32,
    /// Largest accepted decoded image size, in bytes (the decode budget may refuse less).
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// 16384 pixels per side, 64 MiB decoded.
    fn default() -> Self {
        ImageLimits {
            max_dimension: 16_384,
            max_alloc: 64 * MIB,
        }
    }
}

/// The `thumbnail` job type.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailJob {
    limits: ImageLimits,
    budget: &'static DecodeBudget,
}

impl Default for ThumbnailJob {
    fn default() -> Self {
        ThumbnailJob {
            limits: ImageLimits::default(),
            budget: &GLOBAL,
        }
    }
}

impl ThumbnailJob {
    /// A handler with custom decoding limits.
    pub fn with_limits(limits: ImageLimits) -> Self {
        ThumbnailJob {
            limits,
            ..ThumbnailJob::default()
        }
    }

    /// The decoding limits in force.
    pub fn limits(&self) -> ImageLimits {
        self.limits
    }
}

struct Params {
    input: String,
    width: u32,
    height: u32,
    output: Option<String>,
    overwrite: bool,
}

fn box_side(obj: &serde_json::Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> u32 {
    let msg = |got: String| format!("must be an integer from 1 to {MAX_BOX} (pixels), got {got}");
    match get(obj, key) {
        None => {
            errors.push(FieldError::new(
                field(key),
                msg("nothing (it is required)".into()),
            ));
            0
        }
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (1..=MAX_BOX).contains(&n) => n,
            _ => {
                let got = if v.is_number() {
                    v.to_string()
                } else {
                    kind(v).to_string()
                };
                errors.push(FieldError::new(field(key), msg(got)));
                0
            }
        },
    }
}

/// Output format chosen by a path's extension (JPEG or PNG only).
fn format_of_extension(path: &str) -> Option<ImageFormat> {
    let ext = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        _ => None,
    }
}

fn parse(payload: &Value, data_dir: &DataDir) -> Result<Params, Vec<FieldError>> {
    let obj = payload::object(payload)?;
    let mut errors = Vec::new();
    let input = payload::path(obj, "input_path", true, data_dir, &mut errors);
    let width = box_side(obj, "width", &mut errors);
    let height = box_side(obj, "height", &mut errors);
    let output = payload::path(obj, "output_path", false, data_dir, &mut errors);
    if let Some(out) = &output {
        if format_of_extension(out).is_none() {
            errors.push(FieldError::new(
                field("output_path"),
                "must end in .jpg, .jpeg or .png (the extension chooses the output format)",
            ));
        } else if let Some(input) = &input
            && let (Some(a), Some(b)) = (data_dir.normalize(input), data_dir.normalize(out))
            && a == b
        {
            errors.push(FieldError::new(
                field("output_path"),
                "names the input file; a thumbnail never replaces its input (even with \
                 overwrite): choose another output_path",
            ));
        }
    }
    let overwrite = match get(obj, "overwrite") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(FieldError::new(
                field("overwrite"),
                format!(
                    "must be a boolean (true replaces an existing output_path), got {}",
                    kind(other)
                ),
            ));
            false
        }
    };
    match input {
        Some(input) if errors.is_empty() => Ok(Params {
            input,
            width,
            height,
            output,
            overwrite,
        }),
        _ => Err(errors),
    }
}

/// The largest size with the aspect ratio of `w`×`h` that fits in `bw`×`bh`, never larger than
/// the original. Sides are rounded to the nearest pixel and are at least 1.
pub fn fit(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
    if w <= bw && h <= bh {
        return (w, h);
    }
    let (w64, h64, bw64, bh64) = (u64::from(w), u64::from(h), u64::from(bw), u64::from(bh));
    // Round-half-up of a/b for positive integers (b > the box side ≥ 0, so b ≥ 1).
    let div_round = |a: u64, b: u64| (2 * a + b) / (2 * b);
    if bw64 * h64 <= bh64 * w64 {
        // Width is the binding side.
        let nh = div_round(h64 * bw64, w64).clamp(1, bh64);
        (bw, u32::try_from(nh).unwrap_or(bh))
    } else {
        let nw = div_round(w64 * bh64, h64).clamp(1, bw64);
        (u32::try_from(nw).unwrap_or(bw), bh)
    }
}

/// What the header tells before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    format: ImageFormat,
    width: u32,
    height: u32,
    color: ColorType,
    orientation: Orientation,
}

/// Whether applying `o` allocates a rotated copy (the other orientations work in place).
fn rotates(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

impl Header {
    /// Size after orientation.
    fn oriented(&self) -> (u32, u32) {
        if rotates(self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    fn decoded_bytes(&self) -> u64 {
        u64::from(self.width)
            .saturating_mul(u64::from(self.height))
            .saturating_mul(u64::from(self.color.bytes_per_pixel()))
    }
}

/// Worst-case bytes a run holds at once: everything in memory between decoding and writing
/// the thumbnail of `h` (a `file_len`-byte file) at `thumb` size in `out_format`.
fn working_memory(h: &Header, file_len: u64, thumb: (u32, u32), out_format: ImageFormat) -> u64 {
    let (w, hh) = (u128::from(h.width), u128::from(h.height));
    let bpp = u128::from(h.color.bytes_per_pixel());
    let decoded = w * hh * bpp;
    let decoder = u128::from(DECODER_ALLOC)
        + match h.format {
            // The whole file, plus (progressive / non-interleaved files) every component's
            // DCT coefficients as i16, padded to whole MCUs; 4 components for CMYK.
            ImageFormat::Jpeg => {
                let comps = match h.color {
                    ColorType::L8 => 1,
                    ColorType::La8 => 2,
                    _ => 4,
                };
                u128::from(file_len) + 2 * comps * (w + 32) * (hh + 32)
            }
            // Streamed: a few rows plus the inflate window.
            _ => 4 * w * 8 + 256 * 1024,
        };
    let rotated = if rotates(h.orientation) { decoded } else { 0 };
    let (tw, th) = (u128::from(thumb.0), u128::from(thumb.1));
    let resized = if thumb == h.oriented() {
        0
    } else {
        tw * th * bpp
    };
    let float = matches!(h.color, ColorType::Rgb32F | ColorType::Rgba32F);
    let encoder = match out_format {
        // Converted to RGB8 unless already 8-bit gray.
        ImageFormat::Jpeg if h.color == ColorType::L8 => 0,
        ImageFormat::Jpeg => tw * th * 3,
        // Float is converted to RGBA16; the PNG encoder holds the filtered and the compressed
        // image data.
        _ => {
            let out_bpp = if float { 8 } else { bpp };
            let converted = if float { tw * th * 8 } else { 0 };
            converted + 2 * th * (tw * out_bpp + 1)
        }
    };
    let total = decoded + decoder + rotated + resized + encoder + u128::from(SLACK);
    u64::try_from(total).unwrap_or(u64::MAX)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// An input reader that fails once the stop flag is set, so a decoder reading it aborts. It
/// ends at `len` (the size the reservation was computed from), even if the file grows.
struct StopReader<'a, R> {
    inner: R,
    stop: &'a AtomicBool,
    pos: u64,
    len: u64,
}

impl<'a, R> StopReader<'a, R> {
    fn new(inner: R, len: u64, stop: &'a AtomicBool) -> Self {
        StopReader {
            inner,
            stop,
            pos: 0,
            len,
        }
    }
}

impl<R: Read> Read for StopReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the job was stopped"));
        }
        let left = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let end = buf.len().min(left);
        let n = self.inner.read(&mut buf[..end])?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for StopReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

fn check_stop(stop: &AtomicBool) -> Result<(), JobError> {
    if stop.load(Ordering::Relaxed) {
        Err(JobError::Stopped)
    } else {
        Ok(())
    }
}

impl ThumbnailJob {
    /// Reserve `bytes` of the decode budget, waiting for it.
    fn reserve(
        &self,
        bytes: u64,
        user_path: &str,
        pixels: Option<(u32, u32)>,
        stop: &AtomicBool,
    ) -> Result<crate::decode_budget::Reservation<'static>, JobError> {
        self.budget.acquire(bytes, stop).map_err(|r| match r {
            Refusal::Stopped => JobError::Stopped,
            Refusal::TooLarge { capacity } => JobError::Fatal(format!(
                "image `{user_path}`{} needs about {} of memory to decode and resize, more than \
                 the whole decode budget of {} (JOBSCHED_DECODE_BUDGET); shrink the image or \
                 raise JOBSCHED_DECODE_BUDGET",
                pixels.map_or(String::new(), |(w, h)| format!(" ({w}×{h} pixels)")),
                mib(bytes),
                mib(capacity),
            )),
        })
    }

    /// Read the header from a prefix of the file (no pixel data), then check the limits.
    fn read_header<R: Read + Seek>(
        &self,
        src: &mut R,
        file_len: u64,
        user_path: &str,
        stop: &AtomicBool,
    ) -> Result<Header, JobError> {
        let limits = self.limits;
        let mut prefix = HEADER_PREFIX_START;
        let header = loop {
            let take = prefix.min(file_len);
            // The prefix, the JPEG decoder's copy of it, and the decoder's own allocations.
            let _reserved = self.reserve(2 * take + DECODER_ALLOC, user_path, None, stop)?;
            let mut buf = Vec::new();
            src.seek(SeekFrom::Start(0))
                .and_then(|_| src.by_ref().take(take).read_to_end(&mut buf))
                .map_err(|e| read_error(e, user_path, stop))?;
            let complete = take >= file_len || (buf.len() as u64) < take;
            match header_of(&buf, user_path, limits) {
                Ok(h) => break h,
                Err(Some(e)) if complete || prefix >= HEADER_PREFIX_MAX => {
                    check_stop(stop)?;
                    return Err(e);
                }
                // Not JPEG or PNG: a longer prefix cannot help.
                Err(None) => {
                    return Err(JobError::Fatal(format!(
                        "`{user_path}` is not a JPEG or PNG image; thumbnail supports JPEG and \
                         PNG input"
                    )));
                }
                Err(Some(_)) => prefix *= 16,
            }
        };
        let (w, h) = (header.width, header.height);
        if w > limits.max_dimension || h > limits.max_dimension {
            return Err(too_large(user_path, limits, &format!("{w}×{h} pixels")));
        }
        let bytes = header.decoded_bytes();
        if bytes > limits.max_alloc {
            return Err(too_large(
                user_path,
                limits,
                &format!("{w}×{h} pixels, {} MiB decoded", bytes.div_ceil(MIB)),
            ));
        }
        Ok(header)
    }

    /// Decode the whole image (under a reservation) and apply its orientation.
    fn decode<R: Read + Seek>(
        &self,
        src: R,
        header: &Header,
        user_path: &str,
        stop: &AtomicBool,
    ) -> Result<DynamicImage, JobError> {
        let limits = self.limits;
        let mut src = src;
        src.seek(SeekFrom::Start(0))
            .map_err(|e| read_error(e, user_path, stop))?;
        let mut reader = ImageReader::with_format(BufReader::new(src), header.format);
        reader.limits(decoder_limits(Some(limits.max_dimension)));
        let image_err = |e| {
            if stop.load(Ordering::Relaxed) {
                JobError::Stopped
            } else {
                image_error(e, user_path, limits)
            }
        };
        let mut decoder = reader.into_decoder().map_err(image_err)?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let seen = (
            decoder.dimensions(),
            decoder.color_type(),
            rotates(orientation),
        );
        if seen
            != (
                (header.width, header.height),
                header.color,
                rotates(header.orientation),
            )
        {
            return Err(JobError::Retryable(format!(
                "`{user_path}` changed while it was being read"
            )));
        }
        let mut img = DynamicImage::from_decoder(decoder).map_err(image_err)?;
        check_stop(stop)?;
        img.apply_orientation(orientation);
        Ok(img)
    }
}

/// Limits for the decoders: their own allocations, and the sides when given.
fn decoder_limits(max_side: Option<u32>) -> Limits {
    let mut l = Limits::no_limits();
    l.max_alloc = Some(DECODER_ALLOC);
    l.max_image_width = max_side;
    l.max_image_height = max_side;
    l
}

/// The header of an image whose first bytes are `prefix`. `Err(None)`: not JPEG or PNG.
fn header_of(
    prefix: &[u8],
    user_path: &str,
    limits: ImageLimits,
) -> Result<Header, Option<JobError>> {
    let reader = ImageReader::new(Cursor::new(prefix))
        .with_guessed_format()
        .map_err(|e| Some(JobError::io(format!("reading `{user_path}`"), e)))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
        _ => return Err(None),
    };
    let mut reader = reader;
    // No side limit here, so that oversized sides are reported with their values.
    reader.limits(decoder_limits(None));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Some(image_error(e, user_path, limits)))?;
    let (width, height) = decoder.dimensions();
    Ok(Header {
        format,
        width,
        height,
        color: decoder.color_type(),
        orientation: decoder.orientation().unwrap_or(Orientation::NoTransforms),
    })
}

fn read_error(e: io::Error, user_path: &str, stop: &AtomicBool) -> JobError {
    if stop.load(Ordering::Relaxed) {
        JobError::Stopped
    } else {
        JobError::io(format!("reading `{user_path}`"), e)
    }
}

fn too_large(user_path: &str, limits: ImageLimits, what: &str) -> JobError {
    JobError::Fatal(format!(
        "image `{user_path}` is too large ({what}); the limits are {max}×{max} pixels and {mib} MiB \
         decoded (decompression-bomb guard); shrink the image first",
        max = limits.max_dimension,
        mib = limits.max_alloc / MIB
    ))
}

fn image_error(e: ImageError, user_path: &str, limits: ImageLimits) -> JobError {
    match e {
        ImageError::IoError(io) => JobError::io(format!("reading `{user_path}`"), io),
        ImageError::Limits(l) => too_large(user_path, limits, &l.to_string()),
        other => JobError::Fatal(format!(
            "cannot decode `{user_path}`: {other}; give a valid JPEG or PNG image"
        )),
    }
}

fn encode(
    img: &DynamicImage,
    format: ImageFormat,
    w: &mut impl Write,
    shown: &str,
) -> Result<(), JobError> {
    let result = match format {
        ImageFormat::Jpeg => {
            let enc = JpegEncoder::new_with_quality(w, JPEG_QUALITY);
            match img {
                DynamicImage::ImageLuma8(_) => img.write_with_encoder(enc),
                _ => DynamicImage::ImageRgb8(img.to_rgb8()).write_with_encoder(enc),
            }
        }
        _ => match img {
            DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
                DynamicImage::ImageRgba16(img.to_rgba16()).write_with_encoder(PngEncoder::new(w))
            }
            _ => img.write_with_encoder(PngEncoder::new(w)),
        },
    };
    result.map_err(|e| match e {
        ImageError::IoError(io) => JobError::io(format!("writing `{shown}`"), io),
        other => JobError::Fatal(format!("cannot encode `{shown}`: {other}")),
    })
}

/// `thumbnails/<stem>_<w>x<h>.<ext>`, keeping the input's extension when it names its format.
fn default_output(input: &str, format: ImageFormat, bw: u32, bh: u32) -> String {
    let p = Path::new(input);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = match p.extension().and_then(|e| e.to_str()) {
        Some(e) if format_of_extension(input) == Some(format) => e.to_string(),
        _ => format
            .extensions_str()
            .first()
            .copied()
            .unwrap_or("img")
            .to_string(),
    };
    format!("thumbnails/{stem}_{bw}x{bh}.{ext}")
}

/// May the output be written over `existing` (the file at the output path, if any)?
/// `explicit`: the user named the output.
fn check_output(
    existing: Option<FileId>,
    input: FileId,
    user_out: &str,
    explicit: bool,
    overwrite: bool,
) -> Result<(), JobError> {
    match existing {
        Some(id) if id == input => Err(JobError::Fatal(format!(
            "output `{user_out}` is the input file itself; a thumbnail never replaces its input \
             (even with overwrite): choose another output_path"
        ))),
        Some(_) if explicit && !overwrite => Err(exists_error(user_out)),
        _ => Ok(()),
    }
}

fn exists_error(user_out: &str) -> JobError {
    JobError::Fatal(format!(
        "output `{user_out}` already exists; set \"overwrite\": true in the payload to replace \
         it, or choose another output_path"
    ))
}

/// `thumbnail` on the job-type API every user type is written on: the payload is taken as
/// JSON (checked by [`ThumbnailJob::validate`]); the image work runs on a blocking thread.
impl Handler for ThumbnailJob {
    type Payload = Value;
    const NAME: &'static str = "thumbnail";
    const DEFAULT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["input_path", "width", "height"],
            "properties": {
                "input_path": {
                    "description": "A JPEG or PNG image inside the data dir.",
                    "type": "string", "minLength": 1
                },
                "width": {"type": "integer", "minimum": 1, "maximum": MAX_BOX},
                "height": {"type": "integer", "minimum": 1, "maximum": MAX_BOX},
                "output_path": {
                    "description": "Where to write it (.jpg, .jpeg or .png), inside the data dir.",
                    "type": "string", "minLength": 1
                },
                "overwrite": {"type": "boolean"}
            }
        })
    }

    fn check_json(&self, payload: &Value, data_dir: &DataDir) -> Option<Vec<FieldError>> {
        Some(self.validate(payload, data_dir))
    }

    async fn run(&self, ctx: Ctx, payload: Value) -> Result<Value, JobError> {
        let job = *self;
        into_result(run_blocking(move || job.run(&payload, ctx.context())).await?)
    }
}

impl ThumbnailJob {
    /// Every problem with `payload` (cheap: no file contents are read). Empty = valid.
    pub fn validate(&self, payload: &Value, data_dir: &DataDir) -> Vec<FieldError> {
        parse(payload, data_dir).err().unwrap_or_default()
    }

    /// The run, on the calling thread (CPU and file work: the worker calls it on a blocking
    /// thread).
    pub fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError> {
        let p = parse(payload, &ctx.data_dir).map_err(invalid)?;
        let stop = &*ctx.stop;
        check_stop(stop)?;
        let input = ctx.data_dir.open_input(&p.input)?;
        let mut src = StopReader::new(input.file, input.len, stop);
        let header = self.read_header(&mut src, input.len, &p.input, stop)?;
        let (user_out, out_format) = match &p.output {
            Some(out) => (
                out.clone(),
                format_of_extension(out).unwrap_or(header.format),
            ),
            None => (
                default_output(&p.input, header.format, p.width, p.height),
                header.format,
            ),
        };
        let explicit = p.output.is_some();
        // Cheap checks before the expensive decode; repeated before writing.
        let existing = ctx.data_dir.existing_output(&user_out)?;
        check_output(existing, input.id, &user_out, explicit, p.overwrite)?;

        let (ow, oh) = header.oriented();
        let (tw, th) = fit(ow, oh, p.width, p.height);
        let need = working_memory(&header, input.len, (tw, th), out_format);
        let _reserved = self.reserve(need, &p.input, Some((header.width, header.height)), stop)?;
        let img = self.decode(src, &header, &p.input, stop)?;
        let (ow, oh) = img.dimensions();
        let (tw, th) = fit(ow, oh, p.width, p.height);
        let thumb = if (tw, th) == (ow, oh) {
            img
        } else {
            let thumb = img.thumbnail_exact(tw, th);
            drop(img);
            thumb
        };
        check_stop(stop)?;
        let out = ctx.data_dir.open_output(&user_out)?;
        check_output(out.existing(), input.id, &user_out, explicit, p.overwrite)?;
        out.write_atomically(p.overwrite || !explicit, |w| {
            encode(&thumb, out_format, w, &user_out)
        })
        .map_err(|e| match e {
            JobError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                exists_error(&user_out)
            }
            other => other,
        })?;
        Ok(RunOutput::Done(json!({
            "output_path": ctx.data_dir.display_relative(out.path()),
            "width": thumb.width(),
            "height": thumb.height(),
            "original_width": ow,
            "original_height": oh,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba};

    const SAMPLE: &str = "/work/shared/seed/sample_data/sample.jpg";

    fn setup() -> (tempfile::TempDir, JobContext) {
        let t = tempfile::tempdir().unwrap();
        let c = JobContext::new(DataDir::new(t.path().join("data")).unwrap());
        std::fs::copy(SAMPLE, c.data_dir.root().join("sample.jpg")).unwrap();
        (t, c)
    }

    fn done(r: Result<RunOutput, JobError>) -> Value {
        match r.unwrap() {
            RunOutput::Done(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Run a thumbnail job with `payload` in `c` and return its result.
    fn thumb(c: &JobContext, payload: Value) -> Value {
        done(ThumbnailJob::default().run(&payload, c))
    }

    /// Thumbnail `input` into a `side` × `side` box at the default output path.
    fn boxed(c: &JobContext, input: &str, side: u32) -> Value {
        thumb(
            c,
            json!({"input_path": input, "width": side, "height": side}),
        )
    }

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(800, 600, 128, 128), (128, 96));
        assert_eq!(fit(600, 800, 128, 128), (96, 128));
        assert_eq!(fit(300, 100, 50, 50), (50, 17));
        assert_eq!(fit(10, 10, 100, 100), (10, 10));
        assert_eq!(fit(10_000, 1, 100, 100), (100, 1));
        assert_eq!(fit(800, 600, 4096, 4096), (800, 600));
        assert_eq!(fit(1000, 500, 100, 10), (20, 10));
    }

    #[test]
    fn sample_jpeg_to_default_output() {
        let (_t, c) = setup();
        assert_eq!(
            boxed(&c, "sample.jpg", 128),
            json!({"output_path": "thumbnails/sample_128x128.jpg", "width": 128, "height": 96,
                   "original_width": 800, "original_height": 600})
        );
        let out = c.data_dir.root().join("thumbnails/sample_128x128.jpg");
        let decoded = image::open(&out).unwrap();
        assert_eq!(decoded.dimensions(), (128, 96));
        assert_eq!(
            image::ImageFormat::from_path(&out).unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            ImageReader::open(&out)
                .unwrap()
                .with_guessed_format()
                .unwrap()
                .format(),
            Some(ImageFormat::Jpeg)
        );
    }

    #[test]
    fn png_with_alpha_to_explicit_output_and_absolute_input() {
        let (_t, c) = setup();
        let img: ImageBuffer<Rgba<u8>, _> =
            ImageBuffer::from_fn(300, 100, |x, _| Rgba([(x % 256) as u8, 0, 0, 128]));
        img.save(c.data_dir.root().join("wide.png")).unwrap();
        let abs_in = c.data_dir.root().join("wide.png");
        let v = thumb(
            &c,
            json!({"input_path": abs_in.to_str().unwrap(), "width": 50, "height": 50,
                    "output_path": "out/small.png"}),
        );
        assert_eq!(v["output_path"], "out/small.png");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(50), Some(17))
        );
        let decoded = image::open(c.data_dir.root().join("out/small.png")).unwrap();
        assert_eq!(decoded.dimensions(), (50, 17));
        assert!(decoded.color().has_alpha());
        // Convert PNG with alpha to JPEG through the output extension.
        let v = thumb(
            &c,
            json!({"input_path": "wide.png", "width": 30, "height": 30,
                    "output_path": "out/small.JPEG"}),
        );
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(30), Some(10))
        );
        let decoded = image::open(c.data_dir.root().join("out/small.JPEG")).unwrap();
        assert_eq!(decoded.dimensions(), (30, 10));
    }

    #[test]
    fn small_image_is_not_upscaled() {
        let (_t, c) = setup();
        let img: ImageBuffer<Rgba<u8>, _> = ImageBuffer::from_pixel(10, 8, Rgba([1, 2, 3, 255]));
        img.save(c.data_dir.root().join("tiny.png")).unwrap();
        assert_eq!(
            boxed(&c, "tiny.png", 100),
            json!({"output_path": "thumbnails/tiny_100x100.png", "width": 10, "height": 8,
                   "original_width": 10, "original_height": 8})
        );
        let decoded = image::open(c.data_dir.root().join("thumbnails/tiny_100x100.png")).unwrap();
        assert_eq!(decoded.dimensions(), (10, 8));
    }

    #[test]
    fn output_escapes_are_refused() {
        let (t, c) = setup();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, c.data_dir.root().join("esc")).unwrap();
        std::os::unix::fs::symlink(outside.join("x.jpg"), c.data_dir.root().join("l.jpg")).unwrap();
        let abs = outside.join("o.jpg");
        for out in ["../o.jpg", abs.to_str().unwrap(), "esc/o.jpg", "l.jpg"] {
            let err = ThumbnailJob::default()
                .run(
                    &json!({"input_path": "sample.jpg", "width": 10, "height": 10,
                            "output_path": out}),
                    &c,
                )
                .unwrap_err();
            assert!(!err.is_retryable(), "{out}: {err}");
            assert!(
                err.to_string().contains("JOBSCHED_DATA_DIR"),
                "{out}: {err}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!outside.join("x.jpg").exists());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A tiny PNG whose header claims `w`×`h` RGBA pixels.
    fn bomb_png(w: u32, h: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn crc_is_right() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let (_t, c) = setup();
        let root = c.data_dir.root();
        // Huge dimensions in the header.
        std::fs::write(root.join("bomb.png"), bomb_png(100_000, 100_000)).unwrap();
        // Within the side limit but over the allocation limit (16000² × 4 bytes ≈ 977 MiB).
        std::fs::write(root.join("wide.png"), bomb_png(16_000, 16_000)).unwrap();
        for (name, detail) in [
            ("bomb.png", "100000×100000 pixels"),
            ("wide.png", "977 MiB decoded"),
        ] {
            let err = ThumbnailJob::default()
                .run(&json!({"input_path": name, "width": 10, "height": 10}), &c)
                .unwrap_err();
            assert!(!err.is_retryable(), "{name}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains("too large") && msg.contains(detail),
                "{name}: {msg}"
            );
        }
        // Small limits reject the 800×600 sample (JPEG path).
        for (max_dimension, max_alloc, says) in
            [(500, 1 << 30, "800×600"), (16_384, 1_000_000, "too large")]
        {
            let strict = ThumbnailJob::with_limits(ImageLimits {
                max_dimension,
                max_alloc,
            });
            let err = strict
                .run(
                    &json!({"input_path": "sample.jpg", "width": 10, "height": 10}),
                    &c,
                )
                .unwrap_err();
            assert!(
                !err.is_retryable() && err.to_string().contains(says),
                "{err}"
            );
        }
        assert!(!root.join("thumbnails").exists());
    }

    #[test]
    fn bad_inputs_are_fatal() {
        let (_t, c) = setup();
        std::fs::write(c.data_dir.root().join("fake.jpg"), "not an image").unwrap();
        std::fs::write(
            c.data_dir.root().join("trunc.jpg"),
            &std::fs::read(SAMPLE).unwrap()[..200],
        )
        .unwrap();
        for input in [
            "fake.jpg",
            "trunc.jpg",
            "missing.jpg",
            "/etc/passwd",
            "../x.jpg",
        ] {
            let err = ThumbnailJob::default()
                .run(&json!({"input_path": input, "width": 10, "height": 10}), &c)
                .unwrap_err();
            assert!(!err.is_retryable(), "{input}: {err}");
            assert!(err.to_string().contains(input), "{input}: {err}");
        }
        std::os::unix::fs::symlink("/etc/passwd", c.data_dir.root().join("p.png")).unwrap();
        let err = ThumbnailJob::default()
            .run(
                &json!({"input_path": "p.png", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(matches!(err, JobError::OutsideDataDir { .. }), "{err:?}");
    }

    #[test]
    fn validation_messages() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path()).unwrap();
        let errs = ThumbnailJob::default().validate(
            &json!({"width": "big", "height": 5000, "output_path": 7}),
            &d,
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "payload.input_path",
                "payload.width",
                "payload.height",
                "payload.output_path"
            ]
        );
        assert!(errs[2].message.contains("5000"), "{}", errs[2].message);
        assert!(errs[1].message.contains("a string"), "{}", errs[1].message);
        assert!(
            ThumbnailJob::default()
                .validate(
                    &json!({"input_path": "a.png", "width": 1, "height": 1, "output_path": null}),
                    &d
                )
                .is_empty()
        );
    }

    /// A handler with its own budget (the process-wide one is shared by parallel tests).
    fn with_budget(limits: ImageLimits, capacity: u64) -> ThumbnailJob {
        ThumbnailJob {
            limits,
            budget: Box::leak(Box::new(DecodeBudget::new(capacity))),
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A `w`×`h` RGBA PNG of noise (incompressible, so decoding reads all of it).
    fn noise_png(w: u32, h: u32) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        let img: ImageBuffer<Rgba<u8>, _> = ImageBuffer::from_fn(w, h, |_, _| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            Rgba(x.to_le_bytes())
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn sample_header() -> (Header, u64) {
        let bytes = std::fs::read(SAMPLE).unwrap();
        let h = header_of(&bytes, "s", ImageLimits::default()).unwrap();
        (h, bytes.len() as u64)
    }

    #[test]
    fn fit_extremes_do_not_overflow() {
        assert_eq!(fit(u32::MAX, 1, 4096, 4096), (4096, 1));
        assert_eq!(fit(1, u32::MAX, 1, 1), (1, 1));
        assert_eq!(fit(u32::MAX, u32::MAX, 1, 4096), (1, 1));
        assert_eq!(fit(u32::MAX, u32::MAX - 1, 4096, 4096), (4096, 4096));
    }

    #[test]
    fn existing_output_needs_overwrite() {
        let (_t, c) = setup();
        let job = ThumbnailJob::default();
        let payload = |w: u32, extra: Value| {
            let mut p = json!({"input_path": "sample.jpg", "width": w, "height": w,
                               "output_path": "out/o.jpg"});
            if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
                p.extend(extra.clone());
            }
            p
        };
        let out = c.data_dir.root().join("out/o.jpg");
        done(job.run(&payload(40, json!({})), &c));
        let first = std::fs::read(&out).unwrap();
        for extra in [
            json!({}),
            json!({"overwrite": false}),
            json!({"overwrite": null}),
        ] {
            let err = job.run(&payload(20, extra.clone()), &c).unwrap_err();
            assert!(!err.is_retryable(), "{extra}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains("already exists") && msg.contains("\"overwrite\": true"),
                "{msg}"
            );
            assert_eq!(
                std::fs::read(&out).unwrap(),
                first,
                "{extra}: output changed"
            );
        }
        let v = done(job.run(&payload(20, json!({"overwrite": true})), &c));
        assert_eq!(v["width"], 20);
        assert_eq!(image::open(&out).unwrap().dimensions(), (20, 15));
        // The default output is replaced without asking.
        let default = json!({"input_path": "sample.jpg", "width": 30, "height": 30});
        done(job.run(&default, &c));
        done(job.run(&default, &c));
        // `overwrite` must be a boolean.
        for bad in [json!("yes"), json!(1), json!([true])] {
            let p = payload(20, json!({ "overwrite": bad }));
            let errs = job.validate(&p, &c.data_dir);
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "payload.overwrite");
            assert!(errs[0].message.contains("boolean"), "{}", errs[0].message);
            let err = job.run(&p, &c).unwrap_err();
            assert!(matches!(err, JobError::InvalidPayload { .. }), "{err:?}");
        }
        assert!(
            job.validate(&payload(20, json!({"overwrite": true})), &c.data_dir)
                .is_empty()
        );
    }

    #[test]
    fn input_is_never_the_output() {
        let (_t, c) = setup();
        let job = ThumbnailJob::default();
        let before = std::fs::read(c.data_dir.root().join("sample.jpg")).unwrap();
        let abs = c.data_dir.root().join("sample.jpg");
        for out in [
            "sample.jpg",
            "./sample.jpg",
            ".//sample.jpg",
            abs.to_str().unwrap(),
        ] {
            let p = json!({"input_path": "sample.jpg", "width": 10, "height": 10,
                           "output_path": out, "overwrite": true});
            let errs = job.validate(&p, &c.data_dir);
            assert_eq!(errs.len(), 1, "{out}: {errs:?}");
            assert_eq!(errs[0].field, "payload.output_path");
            assert!(errs[0].message.contains("input"), "{}", errs[0].message);
            let err = job.run(&p, &c).unwrap_err();
            assert!(!err.is_retryable(), "{out}: {err}");
        }
        assert_eq!(
            std::fs::read(c.data_dir.root().join("sample.jpg")).unwrap(),
            before
        );
        // The run-time check compares file identities (it catches what paths cannot).
        let input = c.data_dir.open_input("sample.jpg").unwrap().id;
        let other = FileId {
            dev: input.dev,
            ino: input.ino.wrapping_add(1),
        };
        let err = check_output(Some(input), input, "x.jpg", true, true).unwrap_err();
        assert!(err.to_string().contains("input file itself"), "{err}");
        assert!(check_output(Some(input), input, "x.jpg", false, false).is_err());
        assert!(check_output(Some(other), input, "x.jpg", true, true).is_ok());
        assert!(check_output(Some(other), input, "x.jpg", false, false).is_ok());
        assert!(check_output(Some(other), input, "x.jpg", true, false).is_err());
        assert!(check_output(None, input, "x.jpg", true, false).is_ok());
    }

    #[test]
    fn reservation_counts_every_buffer() {
        let (h, len) = sample_header();
        assert_eq!((h.format, h.width, h.height), (ImageFormat::Jpeg, 800, 600));
        let decoded = 800 * 600 * 3;
        let small = working_memory(&h, len, (128, 96), ImageFormat::Jpeg);
        // The file (read whole), the decoded image, the thumbnail and its RGB copy.
        assert!(
            small >= len + decoded + 2 * 128 * 96 * 3 + DECODER_ALLOC,
            "{small}"
        );
        // No resize: no thumbnail buffer; a rotation adds a full copy.
        let same = working_memory(&h, len, (800, 600), ImageFormat::Jpeg);
        let rotated = Header {
            orientation: Orientation::Rotate90,
            ..h
        };
        let rot = working_memory(&rotated, len, (96, 128), ImageFormat::Jpeg);
        assert_eq!(rot - small, decoded);
        let flipped = Header {
            orientation: Orientation::FlipHorizontal,
            ..h
        };
        assert_eq!(
            working_memory(&flipped, len, (128, 96), ImageFormat::Jpeg),
            small
        );
        assert!(same > small);
        // Absurd sizes saturate instead of overflowing.
        let huge = Header {
            width: u32::MAX,
            height: u32::MAX,
            color: ColorType::Rgba32F,
            ..rotated
        };
        assert!(working_memory(&huge, u64::MAX, (4096, 4096), ImageFormat::Png) > 1 << 62);
        assert_eq!(huge.decoded_bytes(), u64::MAX);

        // A run reserves exactly that, and gives it back.
        let (_t, c) = setup();
        let job = with_budget(ImageLimits::default(), 64 * MIB);
        done(job.run(
            &json!({"input_path": "sample.jpg", "width": 128, "height": 128}),
            &c,
        ));
        assert_eq!(job.budget.peak(), small);
        assert_eq!(job.budget.in_use(), 0);
    }

    #[test]
    fn image_over_the_whole_budget_fails_at_once() {
        let (_t, c) = setup();
        let job = with_budget(ImageLimits::default(), 8 * MIB);
        let err = job
            .run(
                &json!({"input_path": "sample.jpg", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("JOBSCHED_DECODE_BUDGET")
                && msg.contains("8.0 MiB")
                && msg.contains("800×600"),
            "{msg}"
        );
        assert_eq!(job.budget.in_use(), 0);
        assert!(!c.data_dir.root().join("thumbnails").exists());
    }

    #[test]
    fn declared_8192_square_png_is_refused_or_fits_the_budget() {
        let (_t, c) = setup();
        std::fs::write(c.data_dir.root().join("big.png"), bomb_png(8192, 8192)).unwrap();
        let payload = json!({"input_path": "big.png", "width": 64, "height": 64});
        // Default limits: 256 MiB decoded is over the 64 MiB per-image limit.
        let err = ThumbnailJob::default().run(&payload, &c).unwrap_err();
        let msg = err.to_string();
        assert!(!err.is_retryable());
        assert!(
            msg.contains("256 MiB decoded") && msg.contains("64 MiB decoded (decompression"),
            "{msg}"
        );
        // A higher per-image limit: still more than the default 192 MiB budget.
        let lax = ImageLimits {
            max_alloc: 1 << 30,
            ..ImageLimits::default()
        };
        let err = with_budget(lax, DEFAULT_DECODE_BUDGET)
            .run(&payload, &c)
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("JOBSCHED_DECODE_BUDGET"), "{err}");
        // With room for it, the run holds its reservation (within the budget) while decoding,
        // then fails on the missing pixel data and gives it back.
        let job = with_budget(lax, 1 << 30);
        let err = job.run(&payload, &c).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(job.budget.peak() > 256 * MIB && job.budget.peak() <= 1 << 30);
        assert_eq!(job.budget.in_use(), 0);
    }

    /// A run waiting for budget gives up promptly when its stop flag is set, and one that
    /// waits proceeds once the budget is released.
    #[test]
    fn waiting_for_budget_honours_the_stop_flag() {
        let (_t, c) = setup();
        let (h, len) = sample_header();
        let need = working_memory(&h, len, (128, 96), ImageFormat::Jpeg);
        let header_need = 2 * len.min(HEADER_PREFIX_START) + DECODER_ALLOC;
        assert!(header_need < need);
        let job = with_budget(ImageLimits::default(), need);
        let no = AtomicBool::new(false);
        // Leave room for the header only.
        let held = job.budget.acquire(need - header_need, &no).unwrap();
        let payload = json!({"input_path": "sample.jpg", "width": 128, "height": 128});
        let spawn = |c: JobContext| {
            let payload = payload.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let r = job.run(&payload, &c);
                tx.send(std::time::Instant::now()).unwrap();
                r
            });
            (t, rx)
        };
        let c1 = JobContext::new(c.data_dir.clone());
        let stop = c1.stop.clone();
        let (t, rx) = spawn(c1);
        wait_until("the run waits for budget", || job.budget.waiting() == 1);
        let flagged = std::time::Instant::now();
        stop.store(true, Ordering::SeqCst);
        let ended = rx
            .recv_timeout(Duration::from_secs(1))
            .expect("the waiting run ignored its stop flag");
        // The wait polls every 25 ms; 250 ms leaves room for a loaded machine.
        assert!(
            ended - flagged < Duration::from_millis(250),
            "{:?}",
            ended - flagged
        );
        let err = t.join().unwrap().unwrap_err();
        assert!(matches!(err, JobError::Stopped), "{err:?}");
        assert_eq!(job.budget.waiting(), 0);
        // Not stopped: it waits, then runs when the budget is freed.
        let (t, rx) = spawn(JobContext::new(c.data_dir.clone()));
        wait_until("the run waits for budget", || job.budget.waiting() == 1);
        assert!(rx.try_recv().is_err());
        drop(held);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        done(t.join().unwrap());
        assert_eq!(job.budget.peak(), need);
    }

    /// A reader that sets the stop flag once `after` bytes have been read, and records how
    /// far it was read.
    struct FlagAfter<'a> {
        inner: Cursor<Vec<u8>>,
        after: u64,
        stop: &'a AtomicBool,
        read: &'a std::sync::atomic::AtomicU64,
    }

    impl Read for FlagAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.fetch_max(self.inner.position(), Ordering::SeqCst);
            if self.inner.position() >= self.after {
                self.stop.store(true, Ordering::SeqCst);
            }
            Ok(n)
        }
    }

    impl Seek for FlagAfter<'_> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn stop_flag_aborts_a_decode_mid_stream() {
        let png = noise_png(512, 512);
        assert!(png.len() > 1_000_000, "{}", png.len());
        let job = ThumbnailJob::default();
        let h = header_of(&png, "n", job.limits).unwrap();
        let decode = |after: u64| {
            let stop = AtomicBool::new(false);
            let read = std::sync::atomic::AtomicU64::new(0);
            let inner = FlagAfter {
                inner: Cursor::new(png.clone()),
                after,
                stop: &stop,
                read: &read,
            };
            let src = StopReader::new(inner, png.len() as u64, &stop);
            let r = job
                .decode(src, &h, "n.png", &stop)
                .map(|img| img.dimensions());
            (r, read.load(Ordering::SeqCst))
        };
        // Flag set a third of the way in: the decoder's next read fails and it gives up
        // there, without reading the rest (at most one more 8 KiB buffer).
        let third = png.len() as u64 / 3;
        let (r, read) = decode(third);
        assert!(matches!(r, Err(JobError::Stopped)), "{r:?}");
        assert!(
            read < third + 64 * 1024,
            "read {read} of {} bytes",
            png.len()
        );
        // Never set: the same decode completes, reading everything.
        let (r, read) = decode(u64::MAX);
        assert_eq!(r.unwrap(), (512, 512));
        assert_eq!(read, png.len() as u64);
        // A flag set before the run stops it before it opens anything.
        let (_t, c) = setup();
        c.stop.store(true, Ordering::SeqCst);
        let err = job
            .run(
                &json!({"input_path": "sample.jpg", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(matches!(err, JobError::Stopped), "{err:?}");
    }

    #[test]
    fn stop_reader_ends_at_the_measured_length() {
        let stop = AtomicBool::new(false);
        let mut r = StopReader::new(Cursor::new(vec![7u8; 100]), 40, &stop);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 40);
        r.seek(SeekFrom::Start(30)).unwrap();
        all.clear();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 10);
        r.seek(SeekFrom::Start(0)).unwrap();
        stop.store(true, Ordering::SeqCst);
        assert!(r.read(&mut [0u8; 8]).is_err());
    }

    #[test]
    fn hard_linked_input_is_refused() {
        let (t, c) = setup();
        let outside = t.path().join("secret.jpg");
        std::fs::copy(SAMPLE, &outside).unwrap();
        std::fs::hard_link(&outside, c.data_dir.root().join("hl.jpg")).unwrap();
        let err = ThumbnailJob::default()
            .run(
                &json!({"input_path": "hl.jpg", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(err.to_string().contains("hard links are refused"), "{err}");
    }
}
