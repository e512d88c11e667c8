//! Thumbnails: real resizing of JPEG, PNG, GIF (first frame) and WebP images, scaled to fit
//! or cropped to fill the requested size, never enlarged; made once per size and kept like
//! any other file.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use kith_storage::catalog;
use serde::{Deserialize, Serialize};

use super::{Content, Media, files};
use crate::gateway::{Error, Result};

/// The largest thumbnail side made; bigger requests get this size.
pub const MAX_THUMBNAIL_SIDE: u32 = 1600;
/// Images larger than this (per side) are not decoded: a small file can claim a huge
/// canvas.
const MAX_SOURCE_SIDE: u32 = 12_000;

/// How a thumbnail fits the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Exactly the requested aspect ratio, cut from the middle.
    Crop,
    /// The whole image, within the requested size.
    Scale,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ThumbnailRecord {
    sha256: String,
    content_type: String,
}

fn format_of(content_type: Option<&str>) -> Option<ImageFormat> {
    match content_type? {
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Makes the thumbnail; `None` when the image is already no bigger than asked (the
/// original serves).
fn render(
    bytes: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    fit: Fit,
) -> Result<Option<(Vec<u8>, &'static str)>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| Error::not_found(format!("Cannot make a thumbnail of this image: {e}")))?;
    let (source_w, source_h) = (image.width(), image.height());
    let resized: DynamicImage = match fit {
        Fit::Scale if source_w <= width && source_h <= height => return Ok(None),
        Fit::Scale => image.resize(width, height, FilterType::Triangle),
        Fit::Crop => {
            // The largest box of the requested shape that the image holds, if the request
            // is bigger than the image: cropping never enlarges.
            let scale = f64::min(
                1.0,
                f64::min(
                    f64::from(source_w) / f64::from(width),
                    f64::from(source_h) / f64::from(height),
                ),
            );
            let w = ((f64::from(width) * scale).round() as u32).max(1);
            let h = ((f64::from(height) * scale).round() as u32).max(1);
            image.resize_to_fill(w, h, FilterType::Triangle)
        }
    };
    let lossless = format != ImageFormat::Jpeg || resized.color().has_alpha();
    let (out_format, content_type) = if lossless {
        (ImageFormat::Png, "image/png")
    } else {
        (ImageFormat::Jpeg, "image/jpeg")
    };
    let mut out = Cursor::new(Vec::new());
    let encodable = if out_format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(resized.to_rgb8())
    } else {
        resized
    };
    encodable
        .write_to(&mut out, out_format)
        .map_err(|e| Error::internal(format!("thumbnail encoding: {e}")))?;
    Ok(Some((out.into_inner(), content_type)))
}

impl Media {
    /// A thumbnail of a local image at most `width`×`height` (each clamped to
    /// 1..=[`MAX_THUMBNAIL_SIDE`]); the original when it is small enough already.
    pub async fn thumbnail(
        &self,
        server: &str,
        media_id: &str,
        width: u32,
        height: u32,
        fit: Fit,
    ) -> Result<Content> {
        let (width, height) = (
            width.clamp(1, MAX_THUMBNAIL_SIDE),
            height.clamp(1, MAX_THUMBNAIL_SIDE),
        );
        let method = match fit {
            Fit::Crop => "crop",
            Fit::Scale => "scale",
        };
        let key = (
            server,
            media_id,
            u64::from(width),
            u64::from(height),
            method,
        );
        let cached: Option<ThumbnailRecord> =
            self.storage.get(&catalog::MEDIAID_SIZE_THUMBNAIL, &key)?;
        if let Some(cached) = cached {
            return Ok(Content {
                bytes: files::load(&self.dir, &cached.sha256).await?,
                content_type: Some(cached.content_type),
                filename: None,
            });
        }
        let (_, original) = self.content(server, media_id).await?;
        let format = format_of(original.content_type.as_deref())
            .ok_or_else(|| Error::not_found("No thumbnail for this type of media"))?;
        let source = original.bytes;
        let rendered = tokio::task::spawn_blocking(move || {
            render(&source, format, width, height, fit).map(|r| (r, source))
        })
        .await
        .map_err(Error::internal)??;
        let (bytes, content_type) = match rendered {
            (Some((bytes, content_type)), _) => (bytes, content_type.to_owned()),
            (None, source) => {
                let content_type = original.content_type.unwrap_or_default();
                return Ok(Content {
                    bytes: source,
                    content_type: Some(content_type),
                    filename: None,
                });
            }
        };
        let sha256 = files::store(&self.dir, bytes.clone()).await?;
        let record = ThumbnailRecord {
            sha256,
            content_type: content_type.clone(),
        };
        self.storage
            .put(&catalog::MEDIAID_SIZE_THUMBNAIL, &key, &record)
            .await?;
        Ok(Content {
            bytes,
            content_type: Some(content_type),
            filename: None,
        })
    }
}
