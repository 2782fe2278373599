import sharp from 'sharp';

/**
 * Resize a grayscale image given as values in [0, 1] to a `size × size` square, the same
 * way PNG/JPEG images are (fit "cover": scale to fill, crop the centre, aspect ratio kept).
 * The values go through sharp as 16-bit samples, so the resampling is libvips' and 8-bit
 * values v/255 come back exactly when no resizing happens.
 */
export async function squareFromUnit(
  values: Float32Array,
  width: number,
  height: number,
  size: number,
): Promise<Float32Array> {
  if (values.length !== width * height)
    throw new Error(`expected ${width * height} values for ${width}x${height}, got ${values.length}`);
  const u16 = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    u16[i] = Math.round((v < 0 ? 0 : v > 1 ? 1 : v) * 65535);
  }
  const { data, info } = await sharp(u16, { raw: { width, height, channels: 1 } })
    .toColourspace('grey16')
    .resize(size, size, { fit: 'cover', position: 'centre' })
    .raw({ depth: 'ushort' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 1 || info.width !== size || info.height !== size || data.length !== size * size * 2)
    throw new Error(
      `unexpected resize output: ${info.channels} channels, ${info.width}x${info.height}, ${data.length} bytes`,
    );
  return unitFromUshortBytes(data);
}

/** 16-bit little-endian sample bytes (any alignment) → Float32 values v / 65535. */
export function unitFromUshortBytes(data: Uint8Array): Float32Array {
  const out = new Float32Array(data.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = (data[2 * i]! | (data[2 * i + 1]! << 8)) / 65535;
  return out;
}
