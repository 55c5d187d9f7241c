"""The ES8388 codec's power-up (ESP32-LyraT, ESP32-A1S AudioKit): its registers over I2C.

Loaded by the ESP32 HAL only on a board with this codec, once at start-up (firmware/hal/esp32.py).
"""
# ES8388 power-up for 16-bit I2S slave mode, ADC from LINPUT1/RINPUT1, DAC to LOUT1/ROUT1.
# After ESP-ADF es8388_init(); register numbers from the ES8388 user guide. Best effort.
REGISTERS = (
    (0x19, 0x04), (0x01, 0x50), (0x02, 0x00), (0x35, 0xA0), (0x37, 0xD0), (0x39, 0xD0),
    (0x08, 0x00),              # slave mode
    (0x04, 0xC0), (0x00, 0x12),
    (0x17, 0x18), (0x18, 0x02),  # DAC: I2S, 16 bit; MCLK/LRCK 256
    (0x26, 0x00), (0x27, 0x90), (0x2A, 0x90), (0x2B, 0x80), (0x2D, 0x00),
    (0x1A, 0x00), (0x1B, 0x00),  # DAC volume 0 dB
    (0x2E, 0x1E), (0x2F, 0x1E), (0x30, 0x1E), (0x31, 0x1E),  # LOUT1/ROUT1/LOUT2/ROUT2 volume
    (0x04, 0x3C),              # DAC power: LOUT1/ROUT1/LOUT2/ROUT2 on
    (0x03, 0xFF), (0x09, 0x88), (0x0A, 0x00), (0x0B, 0x02),
    (0x0C, 0x0C), (0x0D, 0x02),  # ADC: I2S, 16 bit; MCLK/LRCK 256
    (0x10, 0x00), (0x11, 0x00),  # ADC volume 0 dB
    (0x03, 0x09),              # ADC power on
    (0x02, 0xF0), (0x02, 0x00),  # reset the state machines, then start
)


def init(i2c, addr):
    """Write the power-up sequence (OSError when the codec does not answer)."""
    buf = bytearray(1)
    for reg, value in REGISTERS:
        buf[0] = value
        i2c.writeto_mem(addr, reg, buf)
