//! Sources several test suites pack into ROMs.

/// A second object: the string and function `main.c` uses (cross-object resolution).
pub const HELPER_C: &str = r#"
typedef unsigned int u32;
const char vmi_banner[] = "vmirom test ROM";
static const u32 scale[4] = { 0, 1, 2, 3 };
extern u32 vmi_twice(u32 x);
u32 vmi_helper(u32 x) { return scale[x & 3] * vmi_twice(x); }
u32 vmi_twice(u32 x) { return x * 2 + scale[x & 1]; }
"#;

/// 16-bit POST init: prints a marker and its own CS to port 0xE9, returns with retf.
/// `mov $marker, %si` is an R_386_16, the calls into `.text.util16` are R_386_PC16.
pub const INIT16_S: &str = r#"
    .code16
    .section .text.init16,"ax",@progbits
    .globl vmi_init16
vmi_init16:
    pushw %ds
    pushw %si
    pushw %dx
    pushw %cx
    cld
    movw %cs, %ax
    movw %ax, %ds
    movw $0xe9, %dx
    movw $marker, %si
    call puts16
    movw %cs, %ax
    call hex16
    movb $0x0a, %al
    outb %al, %dx
    popw %cx
    popw %dx
    popw %si
    popw %ds
    xorw %ax, %ax
    lretw

    .section .text.util16,"ax",@progbits
    .globl puts16
puts16:
1:  lodsb
    testb %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  retw
    .globl hex16
hex16:
    movw $4, %cx
3:  rolw $4, %ax
    pushw %ax
    andb $0x0f, %al
    addb $0x30, %al
    cmpb $0x39, %al
    jbe 4f
    addb $0x27, %al
4:  outb %al, %dx
    popw %ax
    loop 3b
    retw

    .section .rodata.init16,"a",@progbits
marker:
    .asciz "vmi_init16 ran at "
"#;

/// What [`INIT16_S`] prints before its CS.
pub const INIT16_MARKER: &str = "vmi_init16 ran at ";
