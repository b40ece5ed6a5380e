.code32
.globl _start
_start:
  mov $0x3f8, %dx
  mov $'A', %al
  out %al, %dx
  mov $0x200000, %edi
  xor %eax, %eax
  mov $3072, %ecx
  rep stosl
  movl $0x201003, 0x200000
  movl $0x202003, 0x201000
  mov $0x202000, %edi
  mov $0x83, %eax
  mov $512, %ecx
2: mov %eax, (%edi)
  add $0x200000, %eax
  add $8, %edi
  loop 2b
  mov %cr4, %eax
  or $0x20, %eax
  mov %eax, %cr4
  mov $0x200000, %eax
  mov %eax, %cr3
  mov $0xC0000080, %ecx
  rdmsr
  or $0x100, %eax
  wrmsr
  mov %cr0, %eax
  or $0x80000000, %eax
  mov %eax, %cr0
  lgdt gdtr
  ljmp $0x08, $lm
.code64
lm:
  mov $0x1000000, %rdi
  mov $0x600000, %rcx
  mov $0x0123456789abcdef, %rax
  rep stosq
  mov $0x1000000, %rsi
  mov $0x600000, %rcx
  xor %rbx, %rbx
3: add (%rsi), %rbx
  add $8, %rsi
  loop 3b
  mov $0x3f8, %dx
  mov $'O', %al
  out %al, %dx
  mov $'K', %al
  out %al, %dx
  mov $0x0a, %al
  out %al, %dx
  mov $0xf4, %dx
  mov $0x21, %al
  out %al, %dx
1: hlt
  jmp 1b
.align 8
gdt:
  .quad 0
  .quad 0x00209A0000000000
gdtr:
  .word 15
  .long gdt
