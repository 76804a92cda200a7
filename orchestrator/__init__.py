"""Lathe: fine-tune open models with Axolotl on Ray and check every quantization level on the laptop."""

__version__ = "0.1.0"
