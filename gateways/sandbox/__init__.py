"""Local HTTP emulator of payment gateway APIs (the "gateway sandbox") for tests and demos."""
