// The one translation unit that compiles the stb_image (PNG decoding) and stb_image_write
// (PNG encoding) implementations. Everything else includes the headers only. JPEG is decoded
// with libjpeg-turbo, as PIL decodes it (image_io.cpp).
#define STBI_ONLY_PNG
#define STBI_NO_STDIO  // images are read into memory first (see image_io.cpp)
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
